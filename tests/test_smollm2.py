"""The packaged SmolLM2-135M-Instruct GGUF against `transformers` + torch loading the same file."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import torch_logits

from jaxprune.generation import SamplingConfig, generate
from jaxprune.models import causal_mask, positions_from_keep

TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "12345 + 0.75 = 12345.75; 1,000,000 and 3/4 and -17",
    "  leading spaces\n\n\tnewlines and tabs  ",
    "Ünïcödé — ελληνικά, 中文, emoji 😀🧮, café",
    "<|im_start|>user\nWhat is 3+4?<|im_end|>\n<|im_start|>assistant\n",
    "a<|im_end|>b<|endoftext|>c<repo_name>",
    "$1,234.56 costs 7% more; {\"answer\": \"42\"}",
]
QUESTION = "Tom has 3 apples and buys 5 more. Then he gives 2 to Ann. How many apples does he have now?"


def chat_ids(tokenizer, question=QUESTION):
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text).input_ids


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_matches_transformers_gguf_tokenizer(smollm2, smollm2_torch, text):
    ours, reference = smollm2[1], smollm2_torch[1]
    assert ours(text).input_ids == reference(text).input_ids
    assert ours.decode(ours(text).input_ids) == text


def test_chat_template_and_special_tokens(smollm2):
    tokenizer = smollm2[1]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.convert_tokens_to_ids("<|im_end|>") == 2
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_logits_match_transformers(smollm2, smollm2_torch):
    model, tokenizer = smollm2
    ids = np.asarray([chat_ids(tokenizer)])
    keep = jnp.ones(ids.shape, bool)
    ours = np.asarray(model(jnp.asarray(ids), positions_from_keep(keep), causal_mask(keep)).logits)
    np.testing.assert_allclose(ours, torch_logits(smollm2_torch[0], ids), atol=1e-3, rtol=0)


def test_greedy_continuation_matches_transformers(smollm2, smollm2_torch):
    import torch

    model, tokenizer = smollm2
    prompt = chat_ids(tokenizer)
    with torch.no_grad():
        expected = smollm2_torch[0].generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False,
                                             eos_token_id=2)[0, len(prompt):].tolist()
    ours = generate(model, [prompt], SamplingConfig(max_new_tokens=32, stop_token_ids=(2,)))[0]
    assert len(ours) == 32
    assert ours == expected
