"""Scores of a model's answers on held-out questions: accuracy with a bootstrap interval, and reasoning length.

Input records are the outcomes `jaxprune.data.teacher.sample_chains` writes (greedy, one sample per question):
`id`, `is_correct`, `reasoning_tokens`, `completion_tokens`. The interval is the percentile bootstrap over questions,
seeded, so a summary is reproducible; `outcomes` keeps each question's correctness by id, so that students evaluated on
the same questions can be compared paired (`jaxprune.comparison`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxprune.statistics import bootstrap_interval


def summarize(records: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Accuracy (with its 95% bootstrap interval), mean reasoning / completion tokens of answered questions, and
    `outcomes`: each question's correctness by id."""
    correct = [float(r["is_correct"]) for r in records]
    low, high = bootstrap_interval(correct, seed=seed)
    return {"questions": len(records), "correct": int(sum(correct)), "accuracy": float(np.mean(correct)),
            "accuracy_ci95": [low, high],
            "mean_reasoning_tokens": float(np.mean([r["reasoning_tokens"] for r in records])),
            "mean_completion_tokens": float(np.mean([r["completion_tokens"] for r in records])),
            "outcomes": {str(r["id"]): bool(r["is_correct"]) for r in records}}
