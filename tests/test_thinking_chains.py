"""`<think>` chains (DeepSeek-R1 and its distills, Qwen3 thinking mode): split, pruned, distilled and analysed with
only the inside of the think block as reasoning, under a Qwen3-style chat template and a tiny Qwen3 model."""

import copy

import numpy as np
import pytest
from conftest import tiny_torch_model

import jaxprune
from jaxprune.analysis.importance import record_split
from jaxprune.analysis.preservation import answer_opening
from jaxprune.data.answers import split_thinking
from jaxprune.data.prompts import generation_prompt, split_chain
from jaxprune.data.teacher import judge
from jaxprune.distill.examples import reasoning_at, training_example

# Qwen3's chat template, restated where it matters here: an assistant message with `</think>` is taken apart into
# its reasoning and its content and rebuilt as `<think>\n...\n</think>\n\n` + content; the generation prompt leaves
# opening the block to the model.
QWEN3_STYLE_TEMPLATE = (
    "{%- for message in messages %}{%- if message.role == 'assistant' %}"
    "{%- set content = message.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n')"
    " + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# Hand-written R1-style outputs: the prompt ends inside the block, so the output has only the closing tag; then a
# summary and the answer.
R1_OUTPUTS = {
    "r1-0": ("Tom has 3 apples and buys 5 more. How many apples does he have?", "8",
             "Okay, so Tom starts with 3 apples.\nHe buys 5 more, so 3 + 5 = 8.\nWait, let me check: 8 - 5 = 3. Yes.\n"
             "</think>\n\nTom has 3 + 5 = 8 apples.\n#### 8"),
    "r1-1": ("A box holds 4 rows of 6 eggs. How many eggs are in 2 boxes?", "48",
             "Hmm, one box is 4 * 6 = 24 eggs.\nTwo boxes are 2 * 24 = 48.\n</think>\n\n"
             "Each box holds 24 eggs, so two hold 48.\n#### 48"),
}


@pytest.fixture(scope="module")
def qwen3_tokenizer(smollm2):
    tokenizer = copy.deepcopy(smollm2[1])
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = QWEN3_STYLE_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def records(qwen3_tokenizer):
    """The generate CLI's records of the R1 outputs (its `judge`: split, answer checked, thinking recorded)."""
    made = []
    for key, (question, gold, text) in R1_OUTPUTS.items():
        record = {"id": key, "dataset": "gsm8k", "question": question, "gold": gold, "system": None}
        record.update(completion=text, **judge(record, text, qwen3_tokenizer))
        made.append(record)
    return made


def test_an_output_splits_at_its_think_block_with_or_without_the_opening_tag():
    assert split_thinking("<think>\nstep one\nstep two\n</think>\n\nso 4\n#### 4") == ("step one\nstep two",
                                                                                      "so 4\n#### 4")
    assert split_thinking("step one\n</think>\n#### 4") == ("step one", "#### 4")
    assert split_thinking("no block here\n#### 4") is None


def test_the_teacher_records_the_inside_of_the_block_as_reasoning_and_checks_the_answer_after_it(records):
    first = records[0]
    assert first["thinking"] and first["is_correct"] and first["prediction"] == "8"
    assert first["reasoning"].startswith("Okay, so Tom") and first["reasoning"].endswith("Yes.")
    assert first["answer"] == "Tom has 3 + 5 = 8 apples.\n#### 8"


def test_a_thinking_chains_spans_put_the_tags_in_the_prompt_and_answer_and_rebuild_the_rendered_chat(
        records, qwen3_tokenizer):
    tokenizer, record = qwen3_tokenizer, records[0]
    split = split_chain(tokenizer, record["question"], record["reasoning"], record["answer"], thinking=True)
    assert tokenizer.decode(split.prompt).endswith("<|im_start|>assistant\n<think>\n")
    assert tokenizer.decode(split.reasoning) == record["reasoning"]
    assert tokenizer.decode(split.answer).startswith("\n</think>\n\n" + record["answer"])
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": record["question"]}, {"role": "assistant", "content": record["completion"]}],
        tokenize=False)
    assert tokenizer.decode(split.chain()) == rendered


def test_r1_style_records_go_through_pruning_distillation_and_analysis(records, qwen3_tokenizer, tmp_path):
    tokenizer = qwen3_tokenizer
    tiny_torch_model("qwen3", vocab_size=len(tokenizer), head_dim=24).save_pretrained(tmp_path / "qwen3")
    tokenizer.save_pretrained(tmp_path / "qwen3")
    pruner = jaxprune.Pruner(str(tmp_path / "qwen3"), "greedy", mesh=None)
    pruned = pruner.prune_many(records, keep_ratio=0.5, progress=False)

    for record, chain in zip(records, pruned):
        reasoning_ids = tokenizer(record["reasoning"], add_special_tokens=False).input_ids
        assert chain["reasoning_token_ids"] == reasoning_ids  # only the block's inside is prunable
        assert tokenizer.decode(chain["prompt_token_ids"]).endswith("<think>\n")
        assert tokenizer.decode(chain["answer_token_ids"]).startswith("\n</think>")
        assert sorted(chain["deletion_order"]) == sorted(set(chain["deletion_order"]))
        assert len(chain["deletion_order"]) == len(reasoning_ids) - int(0.5 * len(reasoning_ids))

        # Distillation: the student writes the block itself (the template's generation prompt does not open it).
        example = training_example(tokenizer, chain, reasoning_at(chain, tokenizer, 0.5))
        prompt = generation_prompt(tokenizer, chain["question"], chain.get("system"))
        assert list(example.tokens[:len(prompt)]) == list(prompt) and not example.loss_mask[:len(prompt)].any()
        assert example.loss_mask[len(prompt):].all()
        assert tokenizer.decode(example.tokens[len(prompt):]).startswith("<think>\n")
        assert tokenizer.decode(example.tokens).count("</think>") == 1

        # Analysis: the stored spans are the chain; answer preservation opens the answer after the closing tag.
        split = record_split(chain)
        np.testing.assert_array_equal(split.chain(), np.asarray(chain["prompt_token_ids"] + chain[
            "reasoning_token_ids"] + chain["answer_token_ids"]))
        opening = tokenizer.decode(answer_opening(chain, tokenizer))
        assert opening.startswith("\n</think>\n\n") and opening.endswith("#### ")


# DeepSeek-R1 distills' chat template, restated where it matters: assistant turns keep only what follows `</think>`
# (so a rendered chain loses its reasoning), and the generation prompt opens the block itself.
R1_STYLE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|User|>' + message['content'] }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|Assistant|>' + content + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|Assistant|><think>\\n' }}{% endif %}")


def test_under_an_r1_template_a_thinking_chain_is_what_the_model_writes_after_its_prompt(records, qwen3_tokenizer):
    tokenizer = copy.deepcopy(qwen3_tokenizer)
    tokenizer.chat_template = R1_STYLE_TEMPLATE
    record = records[1]
    split = split_chain(tokenizer, record["question"], record["reasoning"], record["answer"], thinking=True)
    prompt = generation_prompt(tokenizer, record["question"])
    assert split.prompt == prompt and tokenizer.decode(prompt).endswith("<|Assistant|><think>\n")
    assert tokenizer.decode(split.reasoning) == record["reasoning"]
    assert tokenizer.decode(split.answer) == "\n</think>\n\n" + record["answer"] + "<|end|>"
    # The student is given the opening tag by its prompt, so learning starts at the reasoning.
    example = training_example(tokenizer, record, record["reasoning"])
    assert not example.loss_mask[:len(prompt)].any() and example.loss_mask[len(prompt):].all()
