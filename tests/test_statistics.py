"""Accuracy statistics against hand computations and constructed data with known answers."""

import itertools
import json
import math
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

from jaxprune.statistics import (bootstrap_interval, clopper_pearson_interval, holm, mcnemar_exact, paired_comparison,
                                 paired_permutation_test, paired_preservation, paired_seed_question_interval,
                                 question_interval, question_seed_interval, wilson_interval)


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


def _textbook_wilson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson (1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z from the standard library."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p, n = successes / trials, trials
    center = p + z ** 2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
    return (center - spread) / (1 + z ** 2 / n), (center + spread) / (1 + z ** 2 / n)


@pytest.mark.parametrize("successes, trials, confidence", [(0, 200, 0.95), (40, 40, 0.95), (7, 30, 0.95),
                                                           (1, 10, 0.9), (113, 200, 0.99), (3, 5, 0.8)])
def test_wilson_interval_matches_the_closed_form_and_covers_at_the_nominal_rate(successes, trials, confidence):
    assert wilson_interval(successes, trials, confidence=confidence) == pytest.approx(
        _textbook_wilson(successes, trials, confidence), abs=1e-12)
    low, high = wilson_interval(successes, trials, confidence=confidence)
    assert 0 <= low <= successes / trials <= high <= 1
    # Coverage summed exactly over the binomial outcomes of 100 trials, averaged over true rates 0.05 ... 0.95.
    n = 100
    bounds = [wilson_interval(k, n, confidence=confidence) for k in range(n + 1)]
    coverage = [sum(math.comb(n, k) * rate ** k * (1 - rate) ** (n - k) for k in range(n + 1)
                    if bounds[k][0] <= rate <= bounds[k][1]) for rate in np.linspace(0.05, 0.95, 91)]
    assert abs(np.mean(coverage) - confidence) < 0.015


def _binomial_tail(successes: int, trials: int, rate: float, upper: bool) -> float:
    """P(X >= successes) (upper) or P(X <= successes) for X ~ Binomial(trials, rate), summed term by term."""
    ks = range(successes, trials + 1) if upper else range(successes + 1)
    return sum(math.comb(trials, k) * rate ** k * (1 - rate) ** (trials - k) for k in ks)


def _bisect(function, target: float) -> float:
    """The rate in [0, 1] where the increasing `function` reaches `target`."""
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if function(middle) < target else (low, middle)
    return (low + high) / 2


@pytest.mark.parametrize("successes, trials, confidence", [(0, 200, 0.95), (40, 40, 0.95), (7, 30, 0.95),
                                                           (1, 10, 0.9), (113, 200, 0.99), (3, 5, 0.8)])
def test_clopper_pearson_interval_is_where_the_exact_binomial_tails_equal_half_alpha(successes, trials, confidence):
    half_alpha = (1 - confidence) / 2
    # The low end: the rate at which seeing this many or more has probability alpha/2 (0 when none were seen);
    # the high end: the rate at which seeing this many or fewer has probability alpha/2 (1 when all were).
    low = 0.0 if successes == 0 else _bisect(lambda r: _binomial_tail(successes, trials, r, True), half_alpha)
    high = 1.0 if successes == trials else _bisect(lambda r: -_binomial_tail(successes, trials, r, False),
                                                   -half_alpha)
    got = clopper_pearson_interval(successes, trials, confidence=confidence)
    assert got == pytest.approx((low, high), abs=1e-9)


def test_a_proportion_of_none_or_all_gets_an_interval_not_a_point():
    for interval in (wilson_interval, clopper_pearson_interval):
        low, high = interval(0, 200)
        assert low == 0 and 0.01 < high < 0.03  # a bootstrap of 0/200 says 0%-0%
        low, high = interval(40, 40)
        assert high == 1 and 0.85 < low < 0.95


@pytest.mark.parametrize("successes, trials", [(0, 0), (1, -1), (-1, 10), (11, 10)])
def test_proportion_intervals_refuse_impossible_counts(successes, trials):
    for interval in (wilson_interval, clopper_pearson_interval):
        with pytest.raises(ValueError, match="trial|successes"):
            interval(successes, trials)


def _slow_two_level_interval(values, confidence, resamples, seed):
    """One resample at a time: the drawn seeds' rows at the drawn questions, averaged; the same generator calls."""
    rng = np.random.default_rng(seed)
    seeds, questions = values.shape
    question_draws = rng.integers(0, questions, (resamples, questions))
    seed_draws = rng.integers(0, seeds, (resamples, seeds))
    means = []
    for chosen_questions, chosen_seeds in zip(question_draws, seed_draws):
        total = 0.0
        for s in chosen_seeds:
            for q in chosen_questions:
                total += float(values[s, q])
        means.append(total / (seeds * questions))
    tail = (1 - confidence) / 2 * 100
    return tuple(np.percentile(means, [tail, 100 - tail]))


def test_two_level_bootstrap_equals_a_slow_loop_over_the_same_draws_of_questions_and_seeds():
    rng = np.random.default_rng(3)
    skill = np.array([0.2, 0.5, 0.35])[:, None]  # seeds that differ a lot, so resampling them matters
    method = rng.random((3, 40)) < skill
    reference = rng.random((3, 40)) < 0.3
    options = dict(confidence=0.9, resamples=400, seed=5)
    assert question_seed_interval(method, **options) == pytest.approx(
        _slow_two_level_interval(method.astype(int), 0.9, 400, 5), abs=1e-12)
    assert paired_seed_question_interval(method, reference, **options) == pytest.approx(
        _slow_two_level_interval(method.astype(int) - reference.astype(int), 0.9, 400, 5), abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        paired_seed_question_interval(method, reference[:2])


def test_with_identical_seeds_the_two_level_interval_is_the_question_interval_in_distribution():
    rng = np.random.default_rng(4)
    one_seed = rng.random(300) < 0.4
    identical = np.stack([one_seed] * 3)
    for seed in range(3):  # different draws: agreement in distribution, not draw for draw
        assert question_seed_interval(identical, resamples=20_000, seed=seed) == pytest.approx(
            question_interval(identical, resamples=20_000, seed=seed + 10), abs=0.006)
    # Seeds that disagree (same questions, a different skill each) widen it beyond the question-only interval.
    varied = rng.random((3, 300)) < np.array([0.25, 0.4, 0.55])[:, None]
    two_level, questions_only = question_seed_interval(varied), question_interval(varied)
    assert two_level[1] - two_level[0] > 1.5 * (questions_only[1] - questions_only[0])


def _naive_sign_flip_p(method, reference) -> float:
    """Every one of the 2^questions sign vectors, in exact fractions; zero differences included (they change
    nothing, so the count doubles with the total)."""
    difference = [Fraction(int(m.sum()), len(method)) - Fraction(int(r.sum()), len(reference))
                  for m, r in zip(method.T, reference.T)]
    observed = abs(sum(difference))
    hits = sum(abs(sum(s * d for s, d in zip(signs, difference))) >= observed
               for signs in itertools.product([1, -1], repeat=len(difference)))
    return hits / 2 ** len(difference)


@pytest.mark.parametrize("case", range(6))
def test_exact_permutation_test_equals_enumerating_every_sign_flip(case):
    rng = np.random.default_rng(case)
    seeds_method, seeds_reference = [(1, 1), (3, 3), (2, 3), (3, 1), (2, 2), (1, 4)][case]
    method = rng.random((seeds_method, 14)) < 0.55 + 0.05 * case
    reference = rng.random((seeds_reference, 14)) < 0.45
    assert paired_permutation_test(method, reference) == pytest.approx(_naive_sign_flip_p(method, reference),
                                                                       rel=1e-12)


def test_monte_carlo_permutation_test_is_close_to_the_exact_one():
    # One seed, 40 questions: 11 only the method got right, 3 only the reference, 26 concordant.
    method = np.array([True] * 11 + [False] * 3 + [True] * 10 + [False] * 16)[None]
    reference = np.array([False] * 11 + [True] * 3 + [True] * 10 + [False] * 16)[None]
    exact = paired_permutation_test(method, reference)
    assert exact == pytest.approx(2 * sum(math.comb(14, k) for k in range(4)) / 2 ** 14)  # the sign test
    sampled = paired_permutation_test(method, reference, resamples=40_000, seed=1, exact_limit=0)
    assert sampled == pytest.approx(exact, abs=0.006)
    # All 30 discordant one way: hardly a random flip ties it, and the +1 correction keeps p off 0.
    method, reference = np.ones((1, 30), bool), np.zeros((1, 30), bool)
    assert paired_permutation_test(method, reference, resamples=999) == pytest.approx(1 / 1000)
    assert paired_permutation_test(reference, reference) == 1.0


def _naive_holm(p_values):
    """From the definition: sorted p_(1) <= ... <= p_(m), adjusted p_(k) = min(1, max over j <= k of
    (m - j + 1) p_(j)), put back where each came from."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    for k in range(m):
        adjusted[order[k]] = min(1.0, max((m - j) * p_values[order[j]] for j in range(k + 1)))
    return adjusted


@pytest.mark.parametrize("case", range(8))
def test_holm_equals_the_definition_and_keeps_the_order_of_the_p_values(case):
    rng = np.random.default_rng(case)
    p_values = rng.random(1 + 3 * case) ** 3  # many small ones, where Holm's multipliers matter
    if case % 2:
        p_values = np.round(p_values, 2)  # ties
    adjusted = holm(p_values)
    assert adjusted == pytest.approx(_naive_holm(list(p_values)), abs=1e-15)
    for i, j in itertools.product(range(len(p_values)), repeat=2):
        if p_values[i] <= p_values[j]:
            assert adjusted[i] <= adjusted[j]
    assert np.all(adjusted >= p_values) and np.all(adjusted <= 1)
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])  # worked by hand
    assert len(holm([])) == 0


def test_paired_preservation_counts_the_discordant_chains_by_hand_and_tests_them_exactly():
    first = [True, True, False, True, False, False, True, True, True, False, True, True]
    second = [True, False, False, False, True, False, False, False, True, False, False, True]
    both = sum(a and b for a, b in zip(first, second))
    first_only = sum(a and not b for a, b in zip(first, second))
    second_only = sum(b and not a for a, b in zip(first, second))
    neither = sum(not a and not b for a, b in zip(first, second))
    assert (both, first_only, second_only, neither) == (3, 5, 1, 3)
    result = paired_preservation(np.array(first), np.array(second))
    assert (result.chains, result.both, result.first_only, result.second_only, result.neither) == (12, 3, 5, 1, 3)
    assert result.p == pytest.approx(stats.binomtest(first_only, first_only + second_only, 0.5).pvalue, rel=1e-12)
    assert result.first_rate == 8 / 12 and result.second_rate == 4 / 12
    assert result.first_interval == pytest.approx(_textbook_wilson(8, 12, 0.95), abs=1e-12)
    assert result.second_interval == pytest.approx(_textbook_wilson(4, 12, 0.95), abs=1e-12)
    as_dict = json.loads(json.dumps(result.as_dict()))
    assert as_dict["first_only"] == 5 and as_dict["second_interval"] == list(result.second_interval)
    with pytest.raises(ValueError, match="same non-empty chains"):
        paired_preservation(np.array(first), np.array(second[:-1]))


def test_paired_comparison_adds_the_seed_question_interval_and_the_permutation_p_over_its_seed_pairs():
    rng = np.random.default_rng(7)
    method = rng.random((3, 120)) < np.array([0.3, 0.45, 0.4])[:, None]
    reference = rng.random((2, 120)) < 0.35
    pairs = [(2, 0), (0, 1)]
    result = paired_comparison(method, reference, seed_pairs=pairs, resamples=2_000, seed=3)
    per_question = method.mean(axis=0) - reference.mean(axis=0)
    assert result.difference == pytest.approx(per_question.mean())
    assert result.interval == bootstrap_interval(per_question, resamples=2_000, seed=3)  # unchanged
    assert result.seed_question_interval == paired_seed_question_interval(method[[2, 0]], reference[[0, 1]],
                                                                          resamples=2_000, seed=3)
    assert result.permutation_p == paired_permutation_test(method, reference, resamples=2_000, seed=3)
    as_dict = result.as_dict()
    assert as_dict["difference_ci95"] == list(result.interval) and len(as_dict["mcnemar"]) == 2
    assert as_dict["difference_seed_question_ci95"] == list(result.seed_question_interval)
    assert paired_comparison(method, reference, seed_pairs=[]).as_dict()["difference_seed_question_ci95"] is None
