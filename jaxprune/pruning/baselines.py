"""The paper's baselines as static deletion orders over the reasoning tokens (SPEC section 3).

* `uniform`: a seeded random order (seeded per chain by its id, so a chain's order does not depend on the others).
* `surprisal`: one forward over the full chain; least surprising (highest log-prob) tokens go first.
* `attention` (H2O-style): attention each token receives from the tokens after it, summed over every layer, head
  and later query in one forward; the least attended go first.

Ties go to the lowest position. Each returns the full ranking; the caller cuts it at the keep ratio.
"""

from __future__ import annotations

import zlib

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.greedy import PruneTrace, chain_log_likelihoods, deletions_for
from jaxprune.pruning.scoring import Scorer

BASELINES = ("uniform", "surprisal", "attention")


def uniform_order(reasoning_length: int, seed: int, chain_id: str) -> list[int]:
    rng = np.random.default_rng([seed, zlib.crc32(str(chain_id).encode("utf-8"))])
    return [int(i) for i in rng.permutation(reasoning_length)]


def _ascending(importance: np.ndarray) -> list[int]:
    positions = np.arange(len(importance))
    return [int(i) for i in np.lexsort((positions, importance))]


def surprisal_order(scorer: Scorer, split: TokenSplit) -> list[int]:
    tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
    start = len(split.prompt)
    log_probs = scorer.base_pass(tokens).token_log_probs(len(tokens))[start: start + len(split.reasoning)]
    return _ascending(-log_probs)


def attention_order(scorer: Scorer, split: TokenSplit) -> list[int]:
    tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
    start = len(split.prompt)
    received = scorer.base_pass(tokens, with_attention=True).attention_received
    return _ascending(np.asarray(received[start: start + len(split.reasoning)], np.float64))


def baseline_order(method: str, scorer: Scorer, split: TokenSplit, seed: int, chain_id: str) -> list[int]:
    if method == "uniform":
        return uniform_order(len(split.reasoning), seed, chain_id)
    if method == "surprisal":
        return surprisal_order(scorer, split)
    if method == "attention":
        return attention_order(scorer, split)
    raise ValueError(f"unknown baseline {method!r} (known: {', '.join(BASELINES)})")


def static_trace(scorer: Scorer, split: TokenSplit, order: list[int]) -> PruneTrace:
    """A fixed deletion order with the log-likelihoods of the full and the pruned chain (the intermediate chains
    of a static order are not scored)."""
    deleted = set(order)
    kept = tuple(t for i, t in enumerate(split.reasoning) if i not in deleted)
    values = []
    for reasoning in (split.reasoning, kept):
        tokens = np.asarray(split.prompt + reasoning + split.answer, np.int32)
        values.append(chain_log_likelihoods(scorer.base_pass(tokens), len(tokens), len(split.prompt),
                                            len(reasoning)))
    steps = {key: [None] * (len(order) - 1) + [values[1][key]] if order else [] for key in values[1]}
    return PruneTrace(list(order), steps, values[0])


def baseline_trace(method: str, scorer: Scorer, split: TokenSplit, keep_ratio: float, seed: int,
                   chain_id: str) -> PruneTrace:
    """A baseline's deletion order cut at `keep_ratio`, scored by `static_trace`."""
    order = baseline_order(method, scorer, split, seed, chain_id)[: deletions_for(len(split.reasoning), keep_ratio)]
    return static_trace(scorer, split, order)
