"""Accuracy statistics against hand computations and constructed data with known answers."""

import math

import numpy as np
import pytest

from jaxprune.statistics import bootstrap_interval, mcnemar_exact, paired_comparison, question_interval


def _naive_mcnemar_p(only_first: int, only_second: int) -> float:
    """Two-sided exact binomial test at 1/2, summed by hand: twice the smaller tail, at most 1."""
    n, k = only_first + only_second, min(only_first, only_second)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@pytest.mark.parametrize("only_first, only_second", [(15, 0), (7, 3), (4, 4), (0, 1), (30, 12)])
def test_mcnemar_equals_the_binomial_tail_summed_by_hand(only_first, only_second):
    both, neither = 20, 11
    first = np.array([True] * (only_first + both) + [False] * (only_second + neither))
    second = np.array([False] * only_first + [True] * (both + only_second) + [False] * neither)
    got = mcnemar_exact(first, second)
    assert got[:2] == (only_first, only_second)
    assert got[2] == pytest.approx(_naive_mcnemar_p(only_first, only_second), rel=1e-9)


def test_interval_resamples_questions_not_seeds_times_questions():
    rng = np.random.default_rng(0)
    one_seed = rng.random(200) < 0.3
    three_identical_seeds = np.stack([one_seed] * 3)
    # The seeds agree on every question: three of them carry no more information than one.
    assert question_interval(three_identical_seeds) == bootstrap_interval(one_seed.astype(float))
    pooled = bootstrap_interval(three_identical_seeds.ravel().astype(float))  # the old, too-narrow interval
    assert (pooled[1] - pooled[0]) < 0.7 * (question_interval(three_identical_seeds)[1] -
                                            question_interval(three_identical_seeds)[0])


def test_a_difference_hidden_by_overlapping_intervals_is_found_by_the_paired_tests():
    # 200 questions: greedy gets 60 right; the method gets 45 of those same 60 and nothing else.
    greedy = np.zeros(200, bool)
    greedy[:60] = True
    method = np.zeros(200, bool)
    method[:45] = True
    greedy_low, greedy_high = question_interval(greedy[None])
    method_low, method_high = question_interval(method[None])
    assert method_high > greedy_low  # unpaired: the intervals overlap
    result = paired_comparison(method[None], greedy[None])
    assert result.difference == pytest.approx(-0.075)
    assert result.interval[1] < 0  # paired: the interval excludes no difference
    (greedy_only, method_only, p), = result.mcnemar
    assert (greedy_only, method_only) == (15, 0) and p == pytest.approx(2 * 0.5 ** 15)


def test_two_students_that_differ_only_by_chance_show_no_difference():
    rng = np.random.default_rng(1)
    difficulty = rng.random(300)
    greedy = difficulty[None] < 0.3 + 0.1 * rng.random((3, 300))  # same skill, independent noise per seed
    method = difficulty[None] < 0.3 + 0.1 * rng.random((3, 300))
    result = paired_comparison(method, greedy)
    assert result.interval[0] < 0 < result.interval[1]
    assert all(p > 0.05 for _, _, p in result.mcnemar)
    assert [t[:2] for t in result.mcnemar] == [mcnemar_exact(g, m)[:2] for g, m in zip(greedy, method)]


def test_paired_comparison_refuses_different_questions():
    with pytest.raises(ValueError, match="same questions"):
        paired_comparison(np.ones((1, 5), bool), np.ones((1, 6), bool))
