"""Scores of a model's answers on held-out questions: accuracy with a bootstrap interval, and reasoning length.

Input records are the outcomes `jaxprune.data.teacher.sample_chains` writes (greedy, one sample per question):
`is_correct`, `reasoning_tokens`, `completion_tokens`. The interval is the percentile bootstrap over questions,
seeded, so a summary is reproducible.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def bootstrap_interval(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of `values`."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarize(records: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Accuracy (with its 95% bootstrap interval) and mean reasoning / completion tokens of answered questions."""
    correct = [float(r["is_correct"]) for r in records]
    low, high = bootstrap_interval(correct, seed=seed)
    return {"questions": len(records), "correct": int(sum(correct)), "accuracy": float(np.mean(correct)),
            "accuracy_ci95": [low, high],
            "mean_reasoning_tokens": float(np.mean([r["reasoning_tokens"] for r in records])),
            "mean_completion_tokens": float(np.mean([r["completion_tokens"] for r in records]))}
