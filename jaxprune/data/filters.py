"""The filters of SPEC section 2 applied to teacher chains before pruning, with a count for every reason.

In order: only correct chains; reasoning of at least `min_reasoning_chars` characters; then drop chains whose
question, reasoning or answer is longer (in teacher tokens) than the given percentile of the chains left (99th for
GSM8K, 90th for MATH and MMLU-Pro, as in the reference code).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from jaxprune.tasks import get_task

LENGTH_FIELDS = ("question_tokens", "reasoning_tokens", "answer_tokens")


def filter_chains(records: Sequence[dict[str, Any]], *, min_reasoning_chars: int = 100,
                  length_percentile: float | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The records that pass, in their order, and `{reason: count}` of those dropped (plus `kept`).

    `length_percentile` None takes each record's dataset default; 100 turns the length filter off."""
    counts: collections.Counter = collections.Counter()
    passed = []
    for record in records:
        if not record["is_correct"]:
            counts["dropped: not correct"] += 1
        elif len(record["reasoning"]) < min_reasoning_chars:
            counts[f"dropped: reasoning under {min_reasoning_chars} characters"] += 1
        else:
            passed.append(record)
    limits = {}
    for dataset in sorted({r["dataset"] for r in passed}):
        percentile = length_percentile if length_percentile is not None else get_task(dataset).length_percentile
        lengths = {field: [r[field] for r in passed if r["dataset"] == dataset] for field in LENGTH_FIELDS}
        limits[dataset] = {field: float(np.percentile(values, percentile)) for field, values in lengths.items()}
    kept = []
    for record in passed:
        too_long = [f for f in LENGTH_FIELDS if record[f] > limits[record["dataset"]][f]]
        if too_long:
            counts[f"dropped: {too_long[0].removesuffix('_tokens')} above the length percentile"] += 1
        else:
            kept.append(record)
    counts["kept"] = len(kept)
    return kept, dict(counts)
