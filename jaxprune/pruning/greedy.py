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
    details: dict = dataclasses.field(default_factory=dict)  # a method's own facts about this chain, recorded


def chain_log_likelihoods(base: BasePass, length: int, prompt_length: int, reasoning_length: int) -> dict[str, float]:
    """Joint, answer and reasoning log-likelihood of the chain a base pass was run on."""
    log_probs = base.token_log_probs(length)
    reasoning = float(log_probs[prompt_length: prompt_length + reasoning_length].sum())
    answer = float(log_probs[prompt_length + reasoning_length: length].sum())
    return {"joint": reasoning + answer, "answer": answer, "reasoning": reasoning}


def local_costs(base: BasePass, tokens: np.ndarray, prompt_length: int, reasoning_length: int,
                objective: str) -> np.ndarray:
    """Each reasoning token's cost of deletion (nats of `objective` lost) over the two targets next to it alone: its
    own, which leaves the sum, and the one after it, then predicted without it. The base pass gives these exactly for
    every candidate at once; the rest of a cost (the targets further on) is what a suffix pass computes."""
    length = len(tokens)
    log_probs = base.token_log_probs(length)
    counted = np.zeros(length + 1)
    counted[prompt_length + reasoning_length: length] = 1.0
    if objective == "joint":
        counted[prompt_length: length] = 1.0
    c = np.arange(prompt_length, prompt_length + reasoning_length)
    skipped = base.skip_log_probs[c - 1].astype(np.float64)  # x[c+1] predicted from x[:c]
    return counted[c] * log_probs[c] + counted[c + 1] * (log_probs[np.minimum(c + 1, length - 1)] - skipped)


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


WHOLE = np.iinfo(np.int32).max  # the suffix limit of a candidate scored exactly (its whole suffix)


@dataclasses.dataclass(frozen=True)
class Rescore:
    """Candidates a step scores: indices into the remaining tokens, and each one's suffix limit (`WHOLE`: its exact
    cost; a smaller limit: a cheap partial score, see `Scorer.score_step`, that the step never deletes by)."""

    indices: np.ndarray
    limits: np.ndarray

    @classmethod
    def whole(cls, indices) -> "Rescore":
        indices = np.asarray(indices, np.int64)
        return cls(indices, np.full(len(indices), WHOLE, np.int64))


class CandidatePolicy(Protocol):
    """Which candidates a step rescores (approximate greedy); exact greedy rescores all of them every step."""

    def choose(self, remaining: np.ndarray, local: np.ndarray) -> Rescore | None:
        """The candidates to score first this step (None: all, exactly). `remaining` holds the original positions
        left, ascending; `local` each one's local cost (`local_costs`), known without scoring."""

    def refine(self, scored: np.ndarray, limits: np.ndarray, costs: np.ndarray) -> Rescore | None:
        """More candidates to score this step, given those scored so far (indices into `remaining`), their limits
        and costs; None to delete the best of those scored exactly."""

    def observe(self, positions: np.ndarray, limits: np.ndarray, costs: np.ndarray, deleted: list[int]) -> None:
        """The costs (likelihood lost by deleting each, in nats) just scored at `positions` with `limits`, and what
        the step deleted."""

    def details(self) -> dict:
        """Facts about the run that each record carries (e.g. how many steps were certified)."""


def _rounds(policy: CandidatePolicy, rescore: Rescore, request, costs, prompt_length: int):
    """A step's scoring rounds: the policy's first candidates, then more while it asks; (scores, limits)."""
    scores, limits = (yield request(rescore)), rescore.limits
    while True:
        more = policy.refine(scores.candidates - prompt_length, limits, costs(scores))
        if more is None or not len(more.indices):
            return scores, limits
        scores = merge_scores(scores, (yield request(more)))
        limits = np.concatenate([limits, more.limits])


def merge_scores(first: StepScores, second: StepScores) -> StepScores:
    """The scores of two requests of the same step, as one."""
    return StepScores(np.concatenate([first.candidates, second.candidates]),
                      np.concatenate([first.reasoning, second.reasoning]), np.concatenate([first.answer, second.answer]),
                      first.token_forwards + second.token_forwards)


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
            if policy is not None:
                trace.details.update(policy.details())
            return trace
        rescore = None if policy is None else policy.choose(
            remaining, local_costs(base, tokens, prompt_length, len(remaining), config.objective))

        def request(candidates: Rescore | None) -> StepRequest:
            if candidates is None:
                return StepRequest(tokens, prompt_length, len(remaining), base, None, suffix_limit)
            limits = candidates.limits if suffix_limit is None else np.minimum(candidates.limits, suffix_limit)
            return StepRequest(tokens, prompt_length, len(remaining), base, prompt_length + candidates.indices, limits)

        def costs(scores: StepScores) -> np.ndarray:
            return values[config.objective] - scores.objective(config.objective)

        if rescore is None:
            scores = yield request(None)
            limits = np.full(len(scores.candidates), WHOLE)
        else:
            scores, limits = yield from _rounds(policy, rescore, request, costs, prompt_length)
        exact = np.flatnonzero(limits == WHOLE)  # partial scores only guide the policy
        original_positions = remaining[scores.candidates - prompt_length]
        count = min(deletions_per_step, target - len(trace.deletion_order))
        best = pick_best(scores.objective(config.objective)[exact], original_positions[exact], count)
        step_deleted = [int(original_positions[exact[i]]) for i in best]
        if policy is not None:
            policy.observe(original_positions, limits, costs(scores), step_deleted)
        for position in step_deleted:
            trace.deletion_order.append(position)
            deleted.add(position)
            for key in trace.log_likelihoods:
                trace.log_likelihoods[key].append(None)
        unchanged = prompt_length + int(np.searchsorted(remaining, min(step_deleted)))
        remaining = remaining[~np.isin(remaining, step_deleted)]
        if on_step is not None:
            on_step(len(trace.deletion_order), target)
