"""Accuracy statistics over questions: bootstrap intervals that resample the independent unit, paired comparisons.

Students of one comparison answer the same held-out questions, several seeds each. A question's results across seeds
move together (an easy question is easy for every seed), so the question is the independent unit: intervals resample
questions, each carrying its accuracy averaged over seeds, never seeds x questions as if they were independent. Two
methods on the same questions are compared paired: the per-question difference of seed-averaged accuracies,
bootstrapped over questions, and an exact McNemar test per seed on the discordant questions.
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


def mcnemar_exact(first: np.ndarray, second: np.ndarray) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of two bool vectors over the same questions: `(first only, second only, p)`,
    the binomial test of the discordant questions against an even split (p = 1 when there are none)."""
    first, second = np.asarray(first, bool), np.asarray(second, bool)
    only_first, only_second = int(np.sum(first & ~second)), int(np.sum(second & ~first))
    if only_first + only_second == 0:
        return only_first, only_second, 1.0
    return only_first, only_second, float(stats.binomtest(only_first, only_first + only_second, 0.5).pvalue)


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """`method` against `reference` on the same questions: accuracy difference (method - reference) averaged over
    seeds, its paired bootstrap interval over questions, and per seed pair the exact McNemar test."""

    difference: float
    interval: tuple[float, float]
    mcnemar: tuple[tuple[int, int, float], ...]  # per seed pair: (reference only, method only, p)

    def as_dict(self) -> dict:
        return {"difference": self.difference, "difference_ci95": list(self.interval),
                "mcnemar": [{"reference_only": a, "method_only": b, "p": p} for a, b, p in self.mcnemar]}


def paired_comparison(method: np.ndarray, reference: np.ndarray, *,
                      seed_pairs: Sequence[tuple[int, int]] | None = None, **kwargs) -> PairedComparison:
    """Compares `method` and `reference`, each `[seeds, questions]` bool over the same questions in the same order.
    McNemar tests each `(method seed index, reference seed index)` of `seed_pairs` (default: the i-th of each)."""
    method, reference = np.asarray(method, bool), np.asarray(reference, bool)
    if method.shape[1] != reference.shape[1]:
        raise ValueError(f"paired comparison needs the same questions: {method.shape[1]} against "
                         f"{reference.shape[1]}")
    per_question = method.mean(axis=0) - reference.mean(axis=0)
    pairs = seed_pairs if seed_pairs is not None else list(zip(range(len(method)), range(len(reference))))
    tests = tuple(mcnemar_exact(reference[j], method[i]) for i, j in pairs)
    return PairedComparison(float(per_question.mean()), bootstrap_interval(per_question, **kwargs), tests)
