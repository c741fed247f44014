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
