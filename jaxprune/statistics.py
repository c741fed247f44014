"""Accuracy statistics over questions: bootstrap intervals that resample the independent unit, paired comparisons.

Students of one comparison answer the same held-out questions, several seeds each. A question's results across seeds
move together (an easy question is easy for every seed), so the question is the independent unit: intervals resample
questions, each carrying its accuracy averaged over seeds, never seeds x questions as if they were independent. Two
methods on the same questions are compared paired: the per-question difference of seed-averaged accuracies,
bootstrapped over questions, and an exact McNemar test per seed on the discordant questions.

Two further sources of error get their own tools. Training seeds differ too, and a question-only interval hides
that spread: the two-level bootstrap resamples questions and seeds together. Per-seed McNemar tests give several
p-values for one question; one sign-flip permutation test over questions of the seed-averaged difference answers it
once, and `holm` adjusts a family of such p-values. A single proportion (answers preserved out of N chains) gets a
Wilson or Clopper-Pearson interval: a percentile bootstrap of 0/200 is the empty 0%-0%, claiming certainty it lacks.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import stats


def bootstrap_interval(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of `values` (one value per independent unit)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def question_interval(correct: np.ndarray, **kwargs) -> tuple[float, float]:
    """Interval of the accuracy of `correct` `[seeds, questions]` (bool), resampling questions."""
    return bootstrap_interval(np.asarray(correct, np.float64).mean(axis=0), **kwargs)


def _check_proportion(successes: int, trials: int, confidence: float) -> None:
    if trials <= 0:
        raise ValueError(f"a proportion needs at least one trial, got trials={trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, trials={trials}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def wilson_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the proportion `successes / trials`: close to nominal coverage on average, and
    not empty at 0 or N successes (where the Wald interval and a percentile bootstrap collapse to a point)."""
    _check_proportion(successes, trials, confidence)
    z = float(stats.norm.ppf(1 - (1 - confidence) / 2))
    rate, shrink = successes / trials, 1 + z * z / trials
    center = (rate + z * z / (2 * trials)) / shrink
    half = z / shrink * np.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    # At 0 or N successes one end is exactly 0 or 1; rounding would otherwise leave it a hair outside.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == trials else min(1.0, center + half)
    return float(low), float(high)


def clopper_pearson_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of `successes / trials`: inverts the two binomial tails, so it covers at
    least at the nominal rate for every true proportion, at the price of being wider than Wilson."""
    _check_proportion(successes, trials, confidence)
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def _two_level_interval(values: np.ndarray, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of `values` `[seeds, questions]`, each resample drawing questions and seeds
    with replacement. Questions are drawn first with `bootstrap_interval`'s call, so identical seeds reproduce its
    draws exactly."""
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"need a non-empty [seeds, questions] array, got shape {values.shape}")
    seeds, questions = values.shape
    rng = np.random.default_rng(seed)
    question_draws = rng.integers(0, questions, (resamples, questions))
    seed_draws = rng.integers(0, seeds, (resamples, seeds))
    # Per seed row the mean over each resample's questions ([resamples, seeds]); a resample's mean over its drawn
    # seeds x drawn questions is then the mean of its drawn seeds' columns. One row at a time keeps memory at one
    # [resamples, questions] block, as `bootstrap_interval` needs anyway.
    per_seed = np.stack([row[question_draws].mean(axis=1) for row in values], axis=1)
    means = np.take_along_axis(per_seed, seed_draws, axis=1).mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def question_seed_interval(correct: np.ndarray, *, confidence: float = 0.95, resamples: int = 10_000,
                           seed: int = 0) -> tuple[float, float]:
    """Interval of the accuracy of `correct` `[seeds, questions]` (bool), resampling questions and training seeds
    together: it widens by the spread between seeds, which `question_interval` (seeds averaged first) leaves out."""
    return _two_level_interval(np.asarray(correct, np.float64), confidence, resamples, seed)


def paired_seed_question_interval(method: np.ndarray, reference: np.ndarray, *, confidence: float = 0.95,
                                  resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Interval of the accuracy difference `method - reference`, both `[seeds, questions]` bool, resampling the same
    questions and the same seed indices for both: seed i of each saw the same data order and initialisation, so
    their results are paired by index as the questions are."""
    method, reference = np.asarray(method, np.float64), np.asarray(reference, np.float64)
    if method.shape != reference.shape:
        raise ValueError(f"paired seeds and questions need the same shape: {method.shape} against {reference.shape}")
    return _two_level_interval(method - reference, confidence, resamples, seed)


def paired_permutation_test(method: np.ndarray, reference: np.ndarray, *, resamples: int = 10_000, seed: int = 0,
                            exact_limit: int = 16) -> float:
    """Two-sided sign-flip permutation p-value of the mean per-question difference of seed-averaged accuracies,
    `method` and `reference` `[seeds, questions]` bool over the same questions (seed counts may differ). Under no
    difference each question's difference is as likely negated, so flipping signs gives the null distribution.

    Exact over all 2^m flips of the m non-zero differences when m <= `exact_limit`; otherwise `resamples` random
    flips with the +1 correction, p = (1 + #{|flipped| >= |observed|}) / (1 + resamples), never 0."""
    method, reference = np.asarray(method, bool), np.asarray(reference, bool)
    if method.ndim != 2 or reference.ndim != 2 or method.shape[1] != reference.shape[1]:
        raise ValueError(f"paired permutation test needs [seeds, questions] over the same questions: {method.shape} "
                         f"against {reference.shape}")
    # In integer units of 1/(seeds x seeds) the differences are exact, so ties with the observed sum count as ties.
    difference = (method.sum(axis=0, dtype=np.int64) * len(reference)
                  - reference.sum(axis=0, dtype=np.int64) * len(method))
    difference = difference[difference != 0]  # a zero difference flips to itself: it adds nothing either way
    if difference.size == 0:
        return 1.0
    observed = abs(int(difference.sum()))
    if difference.size <= exact_limit:
        signs = 1 - 2 * ((np.arange(2 ** difference.size)[:, None] >> np.arange(difference.size)) & 1)
        return float(np.mean(np.abs(signs @ difference) >= observed))
    signs = 1 - 2 * np.random.default_rng(seed).integers(0, 2, (resamples, difference.size))
    return float((1 + np.sum(np.abs(signs @ difference) >= observed)) / (1 + resamples))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order: the k-th smallest of m is multiplied by m - k + 1,
    made non-decreasing in that order (a larger p never gets a smaller adjusted p) and capped at 1."""
    p_values = np.asarray(p_values, np.float64)
    if np.any((p_values < 0) | (p_values > 1)) or np.any(np.isnan(p_values)):
        raise ValueError(f"p-values must lie in [0, 1], got {p_values}")
    order = np.argsort(p_values, kind="stable")
    scaled = np.minimum(1.0, (len(p_values) - np.arange(len(p_values))) * p_values[order])
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.maximum.accumulate(scaled) if len(scaled) else scaled
    return adjusted


def mcnemar_exact(first: np.ndarray, second: np.ndarray) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of two bool vectors over the same questions: `(first only, second only, p)`,
    the binomial test of the discordant questions against an even split (p = 1 when there are none)."""
    first, second = np.asarray(first, bool), np.asarray(second, bool)
    only_first, only_second = int(np.sum(first & ~second)), int(np.sum(second & ~first))
    if only_first + only_second == 0:
        return only_first, only_second, 1.0
    return only_first, only_second, float(stats.binomtest(only_first, only_first + only_second, 0.5).pvalue)


@dataclasses.dataclass(frozen=True)
class PairedPreservation:
    """Whether two methods preserve the answer on the same chains: the four paired counts, the exact McNemar p of
    the discordant chains, and each rate with its Wilson interval (rates near 0 or 1 are common here)."""

    chains: int
    both: int
    first_only: int
    second_only: int
    neither: int
    p: float
    first_rate: float
    second_rate: float
    first_interval: tuple[float, float]
    second_interval: tuple[float, float]

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "first_interval": list(self.first_interval),
                "second_interval": list(self.second_interval)}


def paired_preservation(first: np.ndarray, second: np.ndarray, *, confidence: float = 0.95) -> PairedPreservation:
    """Compares answer preservation of two methods, `first` and `second` bool over the same chains in order."""
    first, second = np.asarray(first, bool), np.asarray(second, bool)
    if first.ndim != 1 or first.shape != second.shape or first.size == 0:
        raise ValueError(f"paired preservation needs the same non-empty chains: {first.shape} against "
                         f"{second.shape}")
    first_only, second_only, p = mcnemar_exact(first, second)
    chains, first_kept, second_kept = first.size, int(first.sum()), int(second.sum())
    return PairedPreservation(chains, int(np.sum(first & second)), first_only, second_only,
                              int(np.sum(~first & ~second)), p, first_kept / chains, second_kept / chains,
                              wilson_interval(first_kept, chains, confidence=confidence),
                              wilson_interval(second_kept, chains, confidence=confidence))


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """`method` against `reference` on the same questions: accuracy difference (method - reference) averaged over
    seeds, its paired bootstrap interval over questions, and per seed pair the exact McNemar test. Optional, so
    that older constructions stay valid: the interval that also resamples the seed pairs, and the one permutation
    p-value over questions that replaces reading the per-seed McNemar tests together."""

    difference: float
    interval: tuple[float, float]
    mcnemar: tuple[tuple[int, int, float], ...]  # per seed pair: (reference only, method only, p)
    seed_question_interval: tuple[float, float] | None = None
    permutation_p: float | None = None

    def as_dict(self) -> dict:
        return {"difference": self.difference, "difference_ci95": list(self.interval),
                "mcnemar": [{"reference_only": a, "method_only": b, "p": p} for a, b, p in self.mcnemar],
                "difference_seed_question_ci95": (None if self.seed_question_interval is None
                                                  else list(self.seed_question_interval)),
                "permutation_p": self.permutation_p}


def paired_comparison(method: np.ndarray, reference: np.ndarray, *,
                      seed_pairs: Sequence[tuple[int, int]] | None = None, confidence: float = 0.95,
                      resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """Compares `method` and `reference`, each `[seeds, questions]` bool over the same questions in the same order.
    McNemar tests each `(method seed index, reference seed index)` of `seed_pairs` (default: the i-th of each); the
    same pairs are the seeds the seed-and-question interval resamples (none without pairs)."""
    method, reference = np.asarray(method, bool), np.asarray(reference, bool)
    if method.shape[1] != reference.shape[1]:
        raise ValueError(f"paired comparison needs the same questions: {method.shape[1]} against "
                         f"{reference.shape[1]}")
    per_question = method.mean(axis=0) - reference.mean(axis=0)
    pairs = seed_pairs if seed_pairs is not None else list(zip(range(len(method)), range(len(reference))))
    tests = tuple(mcnemar_exact(reference[j], method[i]) for i, j in pairs)
    options = dict(confidence=confidence, resamples=resamples, seed=seed)
    seed_question = (paired_seed_question_interval(method[[i for i, _ in pairs]], reference[[j for _, j in pairs]],
                                                   **options) if len(pairs) else None)
    return PairedComparison(float(per_question.mean()), bootstrap_interval(per_question, **options), tests,
                            seed_question, paired_permutation_test(method, reference, resamples=resamples, seed=seed))
