"""Methods that rank a chain's reasoning tokens once (a static order) instead of greedily."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.greedy import PruneConfig, PruneTrace, chain_log_likelihoods, deletions_for
from jaxprune.pruning.methods.base import PruningMethod
from jaxprune.pruning.scoring import Scorer


def static_trace(scorer: Scorer, split: TokenSplit, order: list[int]) -> PruneTrace:
    """A fixed deletion order with the log-likelihoods of the full and the pruned chain (the intermediate chains
    of a static order are not scored)."""
    deleted = set(order)
    kept = tuple(t for i, t in enumerate(split.reasoning) if i not in deleted)
    values = []
    for reasoning in (split.reasoning, kept):
        tokens = split.chain(reasoning)
        values.append(chain_log_likelihoods(scorer.base_pass(tokens), len(tokens), len(split.prompt),
                                            len(reasoning)))
    steps = {key: [None] * (len(order) - 1) + [values[1][key]] if order else [] for key in values[1]}
    return PruneTrace(list(order), steps, values[0])


def ascending(importance: np.ndarray) -> list[int]:
    """Positions from the least to the most important; ties to the lower position."""
    positions = np.arange(len(importance))
    return [int(i) for i in np.lexsort((positions, importance))]


@dataclasses.dataclass(frozen=True)
class StaticOrderMethod(PruningMethod):
    """A method defined by one ranking of the reasoning tokens, cut at the keep ratio."""

    @abc.abstractmethod
    def order(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], keep_ratio: float) -> list[int]:
        """Every reasoning token, the first to delete first (`keep_ratio`: the budget the order is cut at, for
        methods whose ranking depends on it)."""

    def prune(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step=None) -> PruneTrace:
        del start
        order = self.order(scorer, split, record, config.keep_ratio)
        order = order[: deletions_for(len(split.reasoning), config.keep_ratio)]
        if on_step is not None:
            on_step(len(order), len(order))
        return static_trace(scorer, split, order)
