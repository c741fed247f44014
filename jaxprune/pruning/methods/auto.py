"""`auto`: exact greedy where it is affordable, the near-exact mode where it is not, chosen chain by chain.

A chain's exact cost is the cost model's token-forwards for exact greedy to the keep ratio (it grows as N^3 in the
chain's reasoning tokens); at or under `budget` the chain is pruned by exact greedy, over it by `approx` with its
recommended settings. Each record says which ran (`ran`) and the exact cost it was judged by.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune import cost_model
from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.greedy import PruneConfig, PruneSteps, PruneTrace
from jaxprune.pruning.methods.base import SteppedMethod, make_method, register
from jaxprune.pruning.scoring import Scorer


@register
@dataclasses.dataclass(frozen=True)
class Auto(SteppedMethod):
    name = "auto"
    help = ("Exact greedy for chains whose exact cost (cost-model token-forwards) is at most --budget, approx "
            "above it; each record says which ran.")

    budget: int = 1_000_000

    def check(self) -> None:
        if self.budget < 0:
            raise ValueError(f"{self.name}: budget must be >= 0, got {self.budget}")

    def choice(self, split: TokenSplit, config: PruneConfig) -> tuple[str, int]:
        """The method a chain gets and its exact cost."""
        exact_cost = cost_model.chain_token_forwards(len(split.prompt), len(split.reasoning), len(split.answer),
                                                     config.keep_ratio)
        return ("greedy" if exact_cost <= self.budget else "approx"), exact_cost

    def steps(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step=None) -> PruneSteps:
        del start  # the two sides record different modes, so neither extends a saved order
        name, exact_cost = self.choice(split, config)
        trace = yield from make_method(name).steps(scorer, split, record, config, on_step=on_step)
        trace.details.update(ran=name, exact_token_forwards=exact_cost)
        return trace
