"""Accuracy summaries: the bootstrap interval against the normal approximation, and the summary fields."""

import math

import numpy as np
import pytest

from jaxprune.evaluation import bootstrap_interval, summarize


def test_bootstrap_interval_matches_the_normal_approximation_for_many_questions():
    values = np.zeros(2000)
    values[:600] = 1  # accuracy 0.3
    low, high = bootstrap_interval(values, resamples=4000, seed=1)
    half_width = 1.96 * math.sqrt(0.3 * 0.7 / 2000)
    assert low == pytest.approx(0.3 - half_width, abs=0.0015) and high == pytest.approx(0.3 + half_width, abs=0.0015)
    assert bootstrap_interval(values, resamples=4000, seed=1) == (low, high)  # seeded


def test_degenerate_and_empty_inputs():
    assert bootstrap_interval([1.0] * 5) == (1.0, 1.0)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_interval([])


def test_summary_counts_and_means():
    records = [{"is_correct": ok, "reasoning_tokens": r, "completion_tokens": r + 5}
               for ok, r in [(True, 10), (False, 20), (True, 30), (False, 40)]]
    summary = summarize(records)
    assert summary["questions"] == 4 and summary["correct"] == 2 and summary["accuracy"] == 0.5
    assert summary["mean_reasoning_tokens"] == 25 and summary["mean_completion_tokens"] == 30
    low, high = summary["accuracy_ci95"]
    assert 0 <= low < 0.5 < high <= 1


SCRIPT = 'Five plus two makes seven. {"answer": 7}'


def scripted_model(tokenizer, first_after: int, script: str, hidden_size: int = 64):
    """A real Llama whose weights make it a bigram machine: after `first_after` it writes the tokens of `script`,
    then end-of-turn. Attention and MLP outputs are zero, so the next token depends on the current one only: each
    token of the chain gets its own unit embedding, and the head maps it onto its successor."""
    from flax import nnx

    from jaxprune.models import Llama, ModelConfig

    script_ids = tokenizer(script, add_special_tokens=False).input_ids
    chain = [first_after, *script_ids, tokenizer.eos_token_id]
    assert len(set(chain[:-1])) == len(chain) - 1 <= hidden_size, "a bigram script needs distinct tokens"
    config = ModelConfig(model_type="llama", vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=32,
                         num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, max_position_embeddings=512,
                         tie_word_embeddings=False, eos_token_ids=(tokenizer.eos_token_id,))
    model = Llama(config, rngs=nnx.Rngs(0))
    embed = np.zeros((config.vocab_size, hidden_size), np.float32)
    head = np.zeros((hidden_size, config.vocab_size), np.float32)
    for slot, (token, successor) in enumerate(zip(chain, chain[1:])):
        embed[token, slot] = 1.0
        head[slot, successor] = 10.0
    model.embed_tokens[...] = embed
    model.lm_head.kernel[...] = head
    for layer in model.layers:
        layer.self_attn.o_proj.kernel[...] = np.zeros_like(layer.self_attn.o_proj.kernel[...])
        layer.mlp.down_proj.kernel[...] = np.zeros_like(layer.mlp.down_proj.kernel[...])
    return model


def test_evaluate_cli_scores_a_model_that_emits_a_known_string_exactly(smollm2, tmp_path):
    """The whole evaluation path (chat prompt, decoding, answer split, extraction, checking, summary) on a model
    whose every answer is known: 7, against golds of which three are 7."""
    import json

    from conftest import cli
    from jaxprune.checkpoints import save_hf_model
    from jaxprune.data.prompts import SYSTEM_PROMPTS, generation_prompt

    tokenizer = smollm2[1]
    golds = ["7", "3", "7", "12", "7.0"]
    questions = [{"id": f"q{i}", "dataset": "gsm8k", "question": f"What is {i} + {gold}?", "gold": gold}
                 for i, gold in enumerate(golds)]
    first_after = generation_prompt(tokenizer, "anything", SYSTEM_PROMPTS["gsm8k"])[-1]
    assert all(generation_prompt(tokenizer, q["question"], SYSTEM_PROMPTS["gsm8k"])[-1] == first_after
               for q in questions)
    save_hf_model(scripted_model(tokenizer, first_after, SCRIPT), str(tmp_path / "stub"), tokenizer)
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))

    result = cli("jaxprune.experiments.evaluate", f"--model={tmp_path / 'stub'}",
                 f"--source={tmp_path / 'questions.jsonl'}", f"--output={tmp_path / 'eval.jsonl'}",
                 "--dataset=gsm8k", "--max_new_tokens=40", "--batch_size=2")
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = [json.loads(line) for line in (tmp_path / "eval.all.jsonl").read_text().splitlines()]
    assert [o["completion"] for o in outcomes] == [SCRIPT] * len(golds)
    assert [o["is_correct"] for o in outcomes] == [True, False, True, False, True]
    summary = json.loads((tmp_path / "eval.summary.json").read_text())
    reasoning_tokens = len(tokenizer("Five plus two makes seven. ", add_special_tokens=False).input_ids)
    assert (summary["questions"], summary["correct"], summary["accuracy"]) == (5, 3, 0.6)
    assert summary["mean_reasoning_tokens"] == reasoning_tokens
