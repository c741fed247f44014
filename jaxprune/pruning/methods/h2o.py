"""The H2O-style attention baseline: the tokens that receive the least attention go first.

Attention each reasoning token receives from the tokens after it, summed over every layer, head and later query in
one forward over the full chain.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.methods.base import register
from jaxprune.pruning.methods.static import StaticOrderMethod, ascending
from jaxprune.pruning.scoring import Scorer


def attention_order(scorer: Scorer, split: TokenSplit) -> list[int]:
    tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
    start = len(split.prompt)
    received = scorer.base_pass(tokens, with_attention=True).attention_received
    return ascending(np.asarray(received[start: start + len(split.reasoning)], np.float64))


@register
@dataclasses.dataclass(frozen=True)
class Attention(StaticOrderMethod):
    name = "attention"
    help = "Baseline (H2O-style): delete the tokens that receive the least attention first."

    def order(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any]) -> list[int]:
        del record
        return attention_order(scorer, split)
