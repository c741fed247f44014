"""Exact greedy (the paper's method) and its k-deletions-per-step approximation."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.greedy import PruneConfig, PruneSteps, PruneTrace, greedy_steps
from jaxprune.pruning.methods.base import SteppedMethod, register
from jaxprune.pruning.scoring import Scorer


@register
@dataclasses.dataclass(frozen=True)
class ExactGreedy(SteppedMethod):
    name = "greedy"
    help = "The paper's exact greedy: every candidate rescored at every step, one deletion per step."
    extends_saved_orders = True

    def is_exact(self, dtype: str) -> bool:
        # bfloat16 score noise exceeds the tie tolerance, so it can delete other tokens than float32 greedy would
        return dtype == "float32"

    def steps(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step=None) -> PruneSteps:
        del record
        return greedy_steps(scorer, split, config, start, on_step)


@register
@dataclasses.dataclass(frozen=True)
class KPerStep(SteppedMethod):
    name = "k_per_step"
    help = "Approximate greedy: the --deletions_per_step best candidates of each exactly scored step at once."
    extends_saved_orders = True

    deletions_per_step: int = 2

    def check(self) -> None:
        if self.deletions_per_step < 1:
            raise ValueError(f"{self.name}: deletions_per_step must be >= 1, got {self.deletions_per_step}")

    def steps(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step=None) -> PruneSteps:
        del record
        return greedy_steps(scorer, split, config, start, on_step, deletions_per_step=self.deletions_per_step)
