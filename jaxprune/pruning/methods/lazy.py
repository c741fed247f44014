"""Lazy greedy: the classic accelerated greedy, with this method's own (stale) scores as the proxy.

Every candidate keeps the cost (likelihood lost by deleting it, in nats) from the last step that scored it exactly.
A step rescores exactly only the `top_k` candidates whose stale costs are lowest plus the `window` tokens on each
side of the last deletion (a deletion moves its neighbours' costs most), and every `full_every` steps all of them;
it deletes the best of those it rescored. `suffix_limit` (optional) recomputes only that many queries after each
candidate and keeps the base pass's log-probabilities beyond them, so a candidate costs at most `suffix_limit`
token-forwards however long the chain.

`full_every=1` with no `suffix_limit` is exact greedy (every candidate rescored every step).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.greedy import PruneConfig, PruneSteps, PruneTrace, Rescore, greedy_steps
from jaxprune.pruning.methods.base import SteppedMethod, register
from jaxprune.pruning.scoring import Scorer


class StaleCosts:
    """The candidate policy: remembers costs and picks the candidates a step rescores."""

    def __init__(self, size: int, top_k: int, window: int, full_every: int):
        self.costs = np.full(size, np.inf)  # filled by the first step, which scores every candidate
        self.top_k, self.window, self.full_every = top_k, window, full_every
        self.step, self.last_deleted = 0, None

    def choose(self, remaining: np.ndarray, local: np.ndarray) -> Rescore | None:
        del local  # stale whole costs only
        if self.step == 0 or (self.full_every and self.step % self.full_every == 0):
            return None
        costs = self.costs[remaining]
        best = np.lexsort((remaining, costs))[: self.top_k]  # lowest stale cost first, ties to the lower position
        gap = int(np.searchsorted(remaining, self.last_deleted))  # remaining[gap] is the token after the deletion
        near = np.arange(max(gap - self.window, 0), min(gap + self.window, len(remaining)))
        return Rescore.whole(np.union1d(best, near))

    def refine(self, scored: np.ndarray, limits: np.ndarray, costs: np.ndarray) -> None:
        return None  # one round a step

    def details(self) -> dict:
        return {}

    def observe(self, positions: np.ndarray, limits: np.ndarray, costs: np.ndarray, deleted: list[int]) -> None:
        del limits  # every candidate is scored with the method's one suffix limit
        self.costs[positions] = costs
        self.costs[deleted] = np.inf
        self.step += 1
        self.last_deleted = deleted[-1]


@register
@dataclasses.dataclass(frozen=True)
class LazyGreedy(SteppedMethod):
    name = "lazy"
    help = ("Approximate greedy for long chains: rescores the --top_k best stale candidates and --window "
            "neighbours of the last deletion each step, all of them every --full_every steps.")

    top_k: int = 8
    window: int = 2
    full_every: int = 16        # 0: only the first step scores every candidate
    suffix_limit: int = 0       # 0: whole suffixes (exact scores of the rescored candidates)

    def check(self) -> None:
        for field in ("top_k", "window", "full_every", "suffix_limit"):
            if getattr(self, field) < 0:
                raise ValueError(f"{self.name}: {field} must be >= 0, got {getattr(self, field)}")
        if self.top_k == 0 and self.window == 0 and self.full_every != 1:
            raise ValueError(f"{self.name}: top_k and window are both 0, so no step after a full one rescores")

    def policy(self, size: int) -> StaleCosts:
        return StaleCosts(size, self.top_k, self.window, self.full_every)

    def steps(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step=None) -> PruneSteps:
        del record, start
        return greedy_steps(scorer, split, config, on_step=on_step, policy=self.policy(len(split.reasoning)),
                            suffix_limit=self.suffix_limit or None, incremental_base=True)
