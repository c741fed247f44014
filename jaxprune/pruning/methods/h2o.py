"""The H2O baseline (SPEC section 3): heavy hitters by accumulated attention, plus the most recent tokens.

H2O keeps, in a budget split evenly, the tokens that have received the most attention (heavy hitters) and the most
recent ones. Here, over one forward of the full chain: a reasoning token's score is the attention it receives, per
head summed over the later queries that see it (each query's row a distribution), summed over heads and layers; the
last `recent_share` of the kept budget (rounded up) is a window of the most recent reasoning tokens that is never
deleted; the other tokens go lowest score first. Without the window (`recent_share=0`) the ranking favours early
tokens, which more queries see, and deletes the final computation first: that variant is not H2O.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.greedy import deletions_for
from jaxprune.pruning.methods.base import register
from jaxprune.pruning.methods.static import StaticOrderMethod, ascending
from jaxprune.pruning.scoring import Scorer


def attention_received(scorer: Scorer, split: TokenSplit) -> np.ndarray:
    """Each reasoning token's accumulated attention from the later queries, summed over heads and layers."""
    tokens = split.chain()
    start = len(split.prompt)
    received = scorer.base_pass(tokens, with_attention=True).attention_received
    return np.asarray(received[start: start + len(split.reasoning)], np.float64)


def h2o_order(received: np.ndarray, kept: int, recent_share: float) -> list[int]:
    """Deletion order keeping `kept` tokens: the window of the last `ceil(recent_share * kept)` tokens last (never
    deleted at this budget), every other token before it, lowest score first."""
    window = min(len(received), math.ceil(recent_share * kept))
    outside = len(received) - window
    return ascending(received[:outside]) + [outside + i for i in ascending(received[outside:])]


@register
@dataclasses.dataclass(frozen=True)
class H2O(StaticOrderMethod):
    name = "h2o"
    help = ("Baseline (H2O): keep the tokens that receive the most attention and a window of the most recent ones; "
            "delete the rest, least attention first.")
    recent_share: float = 0.5  # of the kept budget, given to the most recent reasoning tokens (H2O: half)

    def check(self) -> None:
        if not 0 <= self.recent_share <= 1:
            raise ValueError(f"recent_share must be in [0, 1], got {self.recent_share}")

    def order(self, scorer: Scorer, split: TokenSplit, record, keep_ratio: float) -> list[int]:
        del record
        n = len(split.reasoning)
        return h2o_order(attention_received(scorer, split), n - deletions_for(n, keep_ratio), self.recent_share)
