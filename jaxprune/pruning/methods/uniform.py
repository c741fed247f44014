"""The uniform baseline: a seeded random order, seeded per chain by its id (independent of the other chains)."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.methods.base import register
from jaxprune.pruning.methods.static import StaticOrderMethod
from jaxprune.pruning.scoring import Scorer


def uniform_order(reasoning_length: int, seed: int, chain_id: str) -> list[int]:
    rng = np.random.default_rng([seed, zlib.crc32(str(chain_id).encode("utf-8"))])
    return [int(i) for i in rng.permutation(reasoning_length)]


@register
@dataclasses.dataclass(frozen=True)
class Uniform(StaticOrderMethod):
    name = "uniform"
    help = "Baseline: delete tokens in a random order (--seed, per chain id)."

    seed: int = 0

    def order(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], keep_ratio: float) -> list[int]:
        del scorer, keep_ratio
        return uniform_order(len(split.reasoning), self.seed, str(record["id"]))

    def record_fields(self) -> dict[str, Any]:
        return {"seed": self.seed}
