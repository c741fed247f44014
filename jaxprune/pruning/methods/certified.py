"""Near-exact greedy (`approx`): lazy greedy whose steps are checked against learned bounds on stale costs.

Every candidate keeps its cost (likelihood lost by deleting it, in nats) from the last step that scored it exactly,
split into its *local* part (its own target and the one after it, which every step's base pass gives for free,
`greedy.local_costs`) and the rest. Its current cost is estimated as its local part now plus the rest as last
scored, and bounded below by that estimate less a high quantile (`1 - tolerance`) of how far one deletion moved such
estimates at that distance and side (`DriftBound`, learned online from the candidates rescored one deletion after
their last score), summed as a root sum of squares over the deletions since the candidate was last scored.

A step rescores exactly the `top_k` candidates with the lowest lower bounds and the `before` / `after` tokens each
side of the last deletion (a clause that loses a word can make its other words free to delete: the largest moves),
then, `round_size` at a time and for at most `max_rounds` rounds, every candidate whose lower bound is below the
best cost found: the step is certified when none is left. It deletes the best candidate rescored. Tolerance 0
rescores every candidate at every step: exact greedy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.greedy import PruneConfig, PruneSteps, PruneTrace, Rescore, greedy_steps
from jaxprune.pruning.methods.base import SteppedMethod, register
from jaxprune.pruning.scoring import Scorer

BUCKETS = 12  # distances 0, 1, 2-3, 4-7, ..., 1024 and beyond


def distance_bucket(distance: np.ndarray) -> np.ndarray:
    """log2 buckets of token distances (0 is its own bucket)."""
    distance = np.asarray(distance)
    return np.minimum(np.where(distance > 0, np.floor(np.log2(np.maximum(distance, 1))) + 1, 0), BUCKETS - 1
                      ).astype(np.int64)


class DriftBound:
    """How far one deletion moved cost estimates at each distance from it: a high quantile of the moves seen (they
    are heavy-tailed). Left and right of the deletion are learned apart."""

    def __init__(self, quantile: float, prior: float):
        self.moves: list[list[float]] = [[] for _ in range(2 * BUCKETS)]
        self.quantile, self.prior = quantile, prior  # prior: nats, where nothing was seen at or nearer
        self._bounds = None

    @staticmethod
    def _bucket(offsets: np.ndarray) -> np.ndarray:
        return distance_bucket(np.abs(offsets)) + BUCKETS * (np.asarray(offsets) > 0)

    def observe(self, offsets: np.ndarray, moves: np.ndarray) -> None:
        """`offsets`: candidate position minus the deletion's; `moves`: how far each estimate was off."""
        for bucket, move in zip(self._bucket(offsets), np.abs(moves)):
            self.moves[bucket].append(float(move))
        self._bounds = None

    def bound(self, offsets: np.ndarray) -> np.ndarray:
        """The bound on one deletion's move at each offset; an unseen bucket takes the nearest seen one closer to
        the deletion on its side (moves shrink with distance, so that errs high), or the prior."""
        if self._bounds is None:
            self._bounds = np.empty(2 * BUCKETS)
            for side in (0, BUCKETS):
                nearer = self.prior
                for bucket in range(side, side + BUCKETS):
                    if self.moves[bucket]:
                        nearer = float(np.quantile(self.moves[bucket], self.quantile))
                    self._bounds[bucket] = nearer
        return self._bounds[self._bucket(offsets)]


class CertifiedCosts:
    """The candidate policy of `greedy_steps`: stale costs, their bounds, and what each round rescores."""

    def __init__(self, size: int, *, tolerance: float, top_k: int, before: int, after: int, round_size: int,
                 max_rounds: int, prior: float = 4.0):
        self.rest = np.full(size, np.inf)      # cost less its local part when last scored (the first step: all)
        self.scored_at = np.zeros(size, np.int64)  # deletions done when last scored
        self.local = np.zeros(size)            # this step's local costs
        self.deleted: list[int] = []
        self.drift = DriftBound(1.0 - tolerance, prior)
        self.exact = tolerance == 0
        self.top_k, self.before, self.after = top_k, before, after
        self.round_size, self.max_rounds = round_size, max_rounds
        self.certified_steps = self.steps = 0
        self._bounds, self._round = None, 0

    def lower_bounds(self, positions: np.ndarray) -> np.ndarray:
        """Each candidate's estimate less its bound: the root sum of squares of the deletions since its score."""
        squares = np.zeros(len(positions))
        for step, deleted in enumerate(self.deleted):
            squares += (self.scored_at[positions] <= step) * self.drift.bound(positions - deleted) ** 2
        return self.local[positions] + self.rest[positions] - np.sqrt(squares)

    def choose(self, remaining: np.ndarray, local: np.ndarray) -> Rescore | None:
        self.local[remaining] = local
        if not self.deleted or self.exact:
            return None
        self._bounds, self._round = self.lower_bounds(remaining), 0
        first = np.lexsort((remaining, self._bounds))[: self.top_k]
        gap = int(np.searchsorted(remaining, self.deleted[-1]))  # remaining[gap] is the token after the deletion
        near = np.arange(max(gap - self.before, 0), min(gap + self.after, len(remaining)))
        return Rescore.whole(np.union1d(first, near))

    def refine(self, scored: np.ndarray, limits: np.ndarray, costs: np.ndarray) -> Rescore | None:
        if self._bounds is None:
            return None
        open_ = np.ones(len(self._bounds), bool)
        open_[scored] = False
        uncertified = np.flatnonzero(open_ & (self._bounds < costs.min()))
        if not len(uncertified):
            self.certified_steps += 1
            return None
        self._round += 1
        if self._round >= self.max_rounds:
            return None
        return Rescore.whole(uncertified[np.argsort(self._bounds[uncertified], kind="stable")[: self.round_size]])

    def details(self) -> dict[str, Any]:
        """What each record says of the run: steps certified (every candidate's bound cleared) of steps taken."""
        return {"certified_steps": self.certified_steps, "steps": self.steps}

    def observe(self, positions: np.ndarray, limits: np.ndarray, costs: np.ndarray, deleted: list[int]) -> None:
        del limits  # every candidate is scored exactly
        if self.deleted:
            once = self.scored_at[positions] == len(self.deleted) - 1  # scored one deletion ago: one move seen
            estimate = self.local[positions[once]] + self.rest[positions[once]]
            self.drift.observe(positions[once] - self.deleted[-1], costs[once] - estimate)
        else:
            self.certified_steps += 1  # the first step scores every candidate
        self.steps += 1
        self.rest[positions] = costs - self.local[positions]
        self.scored_at[positions] = len(self.deleted)
        self.deleted.extend(deleted)
        self.rest[deleted] = np.inf
        self._bounds = None


@register
@dataclasses.dataclass(frozen=True)
class Approx(SteppedMethod):
    name = "approx"
    help = ("Near-exact greedy (the recommended mode for long chains): rescores candidates by learned bounds on "
            "their stale costs until each step is certified at --tolerance (0: exact greedy).")

    tolerance: float = 0.01
    top_k: int = 2
    before: int = 8
    after: int = 0
    round_size: int = 16
    max_rounds: int = 4
    prior: float = 4.0  # nats one deletion may move a cost, at distances where no move has been seen yet

    def check(self) -> None:
        if not 0.0 <= self.tolerance < 0.5:
            raise ValueError(f"{self.name}: tolerance must be in [0, 0.5), got {self.tolerance}")
        for field, least in (("top_k", 1), ("before", 0), ("after", 0), ("round_size", 1), ("max_rounds", 1),
                             ("prior", 0)):
            if getattr(self, field) < least:
                raise ValueError(f"{self.name}: {field} must be >= {least}, got {getattr(self, field)}")

    def policy(self, size: int) -> CertifiedCosts:
        return CertifiedCosts(size, tolerance=self.tolerance, top_k=self.top_k, before=self.before, after=self.after,
                              round_size=self.round_size, max_rounds=self.max_rounds, prior=self.prior)

    def is_exact(self, dtype: str) -> bool:
        return self.tolerance == 0 and dtype == "float32"

    def steps(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step=None) -> PruneSteps:
        del record, start
        return greedy_steps(scorer, split, config, on_step=on_step, policy=self.policy(len(split.reasoning)),
                            incremental_base=True)
