"""The surprisal baseline: one forward over the full chain; the least surprising (highest log-prob) tokens go first."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.methods.base import register
from jaxprune.pruning.methods.static import StaticOrderMethod, ascending
from jaxprune.pruning.scoring import Scorer


def surprisal_order(scorer: Scorer, split: TokenSplit) -> list[int]:
    tokens = split.chain()
    start = len(split.prompt)
    log_probs = scorer.base_pass(tokens).token_log_probs(len(tokens))[start: start + len(split.reasoning)]
    return ascending(-log_probs)


@register
@dataclasses.dataclass(frozen=True)
class Surprisal(StaticOrderMethod):
    name = "surprisal"
    help = "Baseline: delete the least surprising tokens (highest log-probability in one forward) first."

    def order(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], keep_ratio: float) -> list[int]:
        del record, keep_ratio
        return surprisal_order(scorer, split)
