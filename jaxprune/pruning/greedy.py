"""The greedy loop: delete the reasoning token whose removal costs the least likelihood, one (or k) per step.

Exact mode (the paper's): every remaining reasoning token is scored at every step, one deletion per step, ties to
the lowest original position. Approximate modes, off by default: `deletions_per_step` > 1 deletes the k best
candidates of a step at once; `proxy` scores exactly only the `proxy_top_k` candidates a cheap signal of the step's
base pass proposes (`surprisal`: least surprising first; `attention`: least attention received first).

A run can start from a saved deletion order (resume or extend to a lower keep ratio): the saved deletions are
replayed without scoring and their recorded log-likelihoods are kept.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.scoring import BasePass, Scorer

OBJECTIVES = ("joint", "answer")
PROXIES = ("surprisal", "attention")
# Candidates whose scores differ by less than this many nats are tied (float32 noise is ~1e-5 nats on a chain);
# a tie goes to the lowest original position, as in the reference.
TIE_TOLERANCE = 1e-4


def deletions_for(reasoning_length: int, keep_ratio: float) -> int:
    """`N - int(N * keep_ratio)` as in the reference, robust to float error (0.7 * 10 is 7, not 6)."""
    return reasoning_length - int(reasoning_length * keep_ratio + 1e-9)


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    keep_ratio: float
    objective: str = "joint"
    deletions_per_step: int = 1
    proxy: str | None = None
    proxy_top_k: int = 16

    def __post_init__(self):
        if not 0.0 <= self.keep_ratio < 1.0:
            raise ValueError(f"keep_ratio must be in [0, 1), got {self.keep_ratio}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.deletions_per_step < 1:
            raise ValueError(f"deletions_per_step must be >= 1, got {self.deletions_per_step}")
        if self.proxy is not None and self.proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {', '.join(PROXIES)}, got {self.proxy!r}")
        if self.proxy is not None and self.proxy_top_k < 1:
            raise ValueError(f"proxy_top_k must be >= 1, got {self.proxy_top_k}")

    @property
    def is_exact(self) -> bool:
        return self.deletions_per_step == 1 and self.proxy is None


@dataclasses.dataclass
class PruneTrace:
    """The deletion order (indices into the reasoning tokens) and the log-likelihoods of the chain after each
    deletion (None inside a multi-deletion step, whose intermediate chains are never scored)."""

    deletion_order: list[int]
    log_likelihoods: dict[str, list[float | None]]  # "joint", "answer", "reasoning": one entry per deletion
    original: dict[str, float]


def chain_log_likelihoods(base: BasePass, length: int, prompt_length: int, reasoning_length: int) -> dict[str, float]:
    """Joint, answer and reasoning log-likelihood of the chain a base pass was run on."""
    log_probs = base.token_log_probs(length)
    reasoning = float(log_probs[prompt_length: prompt_length + reasoning_length].sum())
    answer = float(log_probs[prompt_length + reasoning_length: length].sum())
    return {"joint": reasoning + answer, "answer": answer, "reasoning": reasoning}


def pick_best(scores: np.ndarray, positions: np.ndarray, count: int) -> list[int]:
    """Indices of the `count` best scores; within TIE_TOLERANCE the lower original position wins."""
    chosen: list[int] = []
    available = np.ones(len(scores), bool)
    for _ in range(min(count, len(scores))):
        best = scores[available].max()
        tied = available & (scores >= best - TIE_TOLERANCE)
        index = int(np.flatnonzero(tied)[np.argmin(positions[tied])])
        chosen.append(index)
        available[index] = False
    return chosen


def _proxy_candidates(base: BasePass, config: PruneConfig, length: int, prompt_length: int,
                      reasoning_length: int) -> np.ndarray:
    compact = np.arange(prompt_length, prompt_length + reasoning_length)
    if config.proxy == "surprisal":  # high log-prob = unsurprising = proposed first
        importance = -base.token_log_probs(length)[compact]
    else:
        importance = base.attention_received[compact]
    order = np.lexsort((compact, importance))  # least important first, ties to the lower position
    return np.sort(compact[order[: config.proxy_top_k]])


def greedy_prune(scorer: Scorer, split: TokenSplit, config: PruneConfig, start: PruneTrace | None = None,
                 on_step=None) -> PruneTrace:
    """Prunes `split.reasoning` down to `config.keep_ratio`; `on_step(done, total)` reports progress."""
    reasoning = np.asarray(split.reasoning, np.int64)
    target = deletions_for(len(reasoning), config.keep_ratio)
    trace = copy.deepcopy(start) if start else PruneTrace([], {"joint": [], "answer": [], "reasoning": []}, {})
    deleted = set(trace.deletion_order)
    remaining = [i for i in range(len(reasoning)) if i not in deleted]
    prompt_length = len(split.prompt)
    while True:
        tokens = np.concatenate([split.prompt, reasoning[remaining], split.answer]).astype(np.int32)
        base = scorer.base_pass(tokens, with_attention=config.proxy == "attention")
        values = chain_log_likelihoods(base, len(tokens), prompt_length, len(remaining))
        if not trace.original:
            trace.original = values
        elif trace.log_likelihoods["joint"] and trace.log_likelihoods["joint"][-1] is None:
            for key in values:
                trace.log_likelihoods[key][-1] = values[key]
        if len(trace.deletion_order) >= target:
            return trace
        candidates = None
        if config.proxy is not None:
            candidates = _proxy_candidates(base, config, len(tokens), prompt_length, len(remaining))
        scores = scorer.score_step(tokens, prompt_length, len(remaining), base, candidates)
        original_positions = np.asarray(remaining)[scores.candidates - prompt_length]
        count = min(config.deletions_per_step, target - len(trace.deletion_order))
        chosen = pick_best(scores.objective(config.objective), original_positions, count)
        for index in chosen:
            trace.deletion_order.append(int(original_positions[index]))
            deleted.add(int(original_positions[index]))
            for key in trace.log_likelihoods:
                trace.log_likelihoods[key].append(None)
        remaining = [i for i in remaining if i not in deleted]
        if on_step is not None:
            on_step(len(trace.deletion_order), target)
