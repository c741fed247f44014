"""Accuracy summaries: the bootstrap interval against the normal approximation, and the summary fields."""

import math

import numpy as np
import pytest

from jaxprune.evaluation import summarize
from jaxprune.statistics import bootstrap_interval


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
    records = [{"id": f"q{r}", "is_correct": ok, "reasoning_tokens": r, "completion_tokens": r + 5}
               for ok, r in [(True, 10), (False, 20), (True, 30), (False, 40)]]
    summary = summarize(records)
    assert summary["outcomes"] == {"q10": True, "q20": False, "q30": True, "q40": False}
    assert summary["questions"] == 4 and summary["correct"] == 2 and summary["accuracy"] == 0.5
    assert summary["mean_reasoning_tokens"] == 25 and summary["mean_completion_tokens"] == 30
    low, high = summary["accuracy_ci95"]
    assert 0 <= low < 0.5 < high <= 1


SCRIPT = 'Five plus two makes seven. {"answer": 7}'


def test_evaluate_cli_scores_a_model_that_emits_a_known_string_exactly(smollm2, tmp_path):
    """The whole evaluation path (chat prompt, decoding, answer split, extraction, checking, summary) on a model
    whose every answer is known: 7, against golds of which three are 7."""
    import json

    from conftest import cli, scripted_model
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
    assert summary["outcomes"] == {"q0": True, "q1": False, "q2": True, "q3": False, "q4": True}
    assert summary["mean_reasoning_tokens"] == reasoning_tokens
