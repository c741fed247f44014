"""The greedy loop: delete the reasoning token whose removal costs the least likelihood, one (or k) per step.

Exact (the paper's): every remaining reasoning token is scored at every step, one deletion per step, ties to the
lowest original position. `deletions_per_step` > 1 (approximate) deletes the k best candidates of a step at once.
Lazy greedy, which rescores only some candidates a step, is `jaxprune/pruning/methods/lazy.py`.

A run can start from a saved deletion order (resume or extend to a lower keep ratio): the saved deletions are
replayed without scoring and their recorded log-likelihoods are kept.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Generator, Protocol

import numpy as np

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.scoring import BasePass, Scorer, StepRequest, StepScores

OBJECTIVES = ("joint", "answer")
# Candidates whose scores differ by less than this many nats are tied (float32 noise is ~1e-5 nats on a chain);
# a tie goes to the lowest original position, as in the reference.
TIE_TOLERANCE = 1e-4


def deletions_for(reasoning_length: int, keep_ratio: float) -> int:
    """`N - int(N * keep_ratio)` as in the reference, robust to float error (0.7 * 10 is 7, not 6)."""
    return reasoning_length - int(reasoning_length * keep_ratio + 1e-9)


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """What every method shares: how much to keep and the objective the likelihoods are of."""

    keep_ratio: float
    objective: str = "joint"

    def __post_init__(self):
        if not 0.0 <= self.keep_ratio < 1.0:
            raise ValueError(f"keep_ratio must be in [0, 1), got {self.keep_ratio}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")


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


class CandidatePolicy(Protocol):
    """Which candidates a step rescores (approximate greedy); exact greedy rescores all of them every step."""

    def choose(self, remaining: np.ndarray) -> np.ndarray | None:
        """Indices into `remaining` (original positions left, ascending) to score this step; None for all."""

    def observe(self, positions: np.ndarray, costs: np.ndarray, deleted: list[int]) -> None:
        """The costs (likelihood lost by deleting each, in nats) just scored at `positions`, and what the step
        deleted."""


# A pruning run as a generator: it yields each step's scoring request and is sent the step's scores, so that a driver
# can score the steps of several chains in one call (`score_alone` scores one chain's, `multi_chain.py` many).
PruneSteps = Generator[StepRequest, StepScores, PruneTrace]


def score_alone(scorer: Scorer, steps: PruneSteps) -> PruneTrace:
    """Runs one chain's pruning generator to its end, scoring each step on its own."""
    try:
        request = next(steps)
        while True:
            request = steps.send(scorer.score_steps([request])[0])
    except StopIteration as finished:
        return finished.value


def greedy_prune(scorer: Scorer, split: TokenSplit, config: PruneConfig, start: PruneTrace | None = None,
                 on_step=None, **approximations) -> PruneTrace:
    """Prunes `split.reasoning` down to `config.keep_ratio` (`greedy_steps`, each step scored on its own)."""
    return score_alone(scorer, greedy_steps(scorer, split, config, start, on_step, **approximations))


def greedy_steps(scorer: Scorer, split: TokenSplit, config: PruneConfig, start: PruneTrace | None = None,
                 on_step=None, *, deletions_per_step: int = 1, policy: CandidatePolicy | None = None,
                 suffix_limit: int | None = None, incremental_base: bool = False) -> PruneSteps:
    """Prunes `split.reasoning` down to `config.keep_ratio`, yielding each step's `StepRequest`; `on_step(done,
    total)` reports progress. Base passes run here, on `scorer`.

    Exact by default; `deletions_per_step`, a candidate `policy` and a `suffix_limit` (see `Scorer.score_step`)
    each make it approximate. `incremental_base` reruns each step's base pass only from the last deletion on
    (`Scorer.base_pass_after`: same values, fewer token-forwards when a step scores few candidates)."""
    if deletions_per_step < 1:
        raise ValueError(f"deletions_per_step must be >= 1, got {deletions_per_step}")
    reasoning = np.asarray(split.reasoning, np.int64)
    target = deletions_for(len(reasoning), config.keep_ratio)
    trace = copy.deepcopy(start) if start else PruneTrace([], {"joint": [], "answer": [], "reasoning": []}, {})
    deleted = set(trace.deletion_order)
    remaining = np.asarray([i for i in range(len(reasoning)) if i not in deleted], np.int64)
    prompt_length = len(split.prompt)
    base, unchanged = None, 0
    while True:
        tokens = split.chain(reasoning[remaining])
        if incremental_base and base is not None:
            base = scorer.base_pass_after(base, tokens, unchanged)
        else:
            base = scorer.base_pass(tokens)
        values = chain_log_likelihoods(base, len(tokens), prompt_length, len(remaining))
        if not trace.original:
            trace.original = values
        elif trace.log_likelihoods["joint"] and trace.log_likelihoods["joint"][-1] is None:
            for key in values:
                trace.log_likelihoods[key][-1] = values[key]
        if len(trace.deletion_order) >= target:
            return trace
        chosen_indices = None if policy is None else policy.choose(remaining)
        candidates = None if chosen_indices is None else prompt_length + np.asarray(chosen_indices, np.int64)
        scores = yield StepRequest(tokens, prompt_length, len(remaining), base, candidates, suffix_limit)
        objective = scores.objective(config.objective)
        original_positions = remaining[scores.candidates - prompt_length]
        count = min(deletions_per_step, target - len(trace.deletion_order))
        step_deleted = [int(original_positions[i]) for i in pick_best(objective, original_positions, count)]
        if policy is not None:
            policy.observe(original_positions, values[config.objective] - objective, step_deleted)
        for position in step_deleted:
            trace.deletion_order.append(position)
            deleted.add(position)
            for key in trace.log_likelihoods:
                trace.log_likelihoods[key].append(None)
        unchanged = prompt_length + int(np.searchsorted(remaining, min(step_deleted)))
        remaining = remaining[~np.isin(remaining, step_deleted)]
        if on_step is not None:
            on_step(len(trace.deletion_order), target)
