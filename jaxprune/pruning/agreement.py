"""How closely two deletion orders of the same chain agree: kept-set overlap at a keep ratio, rank correlation."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxprune.pruning.greedy import deletions_for


def ranks(order: Sequence[int], reasoning_length: int) -> np.ndarray:
    """The deletion step of each token; tokens the order never deletes share the last rank."""
    rank = np.full(reasoning_length, len(order), np.float64)
    rank[list(order)] = np.arange(len(order))
    return rank


def kept_overlap(order: Sequence[int], reference: Sequence[int], reasoning_length: int, keep_ratio: float) -> float:
    """|kept ∩ kept_reference| / |kept_reference| when both orders are cut at `keep_ratio`."""
    cut = deletions_for(reasoning_length, keep_ratio)
    if len(order) < cut or len(reference) < cut:
        raise ValueError(f"an order of {min(len(order), len(reference))} deletions cannot be cut at keep ratio "
                         f"{keep_ratio} of {reasoning_length} tokens ({cut} deletions)")
    kept = set(range(reasoning_length)) - set(order[:cut])
    kept_reference = set(range(reasoning_length)) - set(reference[:cut])
    return len(kept & kept_reference) / max(len(kept_reference), 1)


def rank_correlation(order: Sequence[int], reference: Sequence[int], reasoning_length: int) -> float:
    """Spearman correlation of the two orders' deletion ranks (never-deleted tokens tied last)."""
    from scipy.stats import spearmanr

    return float(spearmanr(ranks(order, reasoning_length), ranks(reference, reasoning_length)).statistic)
