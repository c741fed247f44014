"""Prunes several chains at once, their greedy steps sharing the scoring kernel's calls.

One chain's step often leaves a kernel call part-empty: a short chain, a late step, a lazy step that rescores a few
candidates. Here up to `chains_per_call` chains are in flight; each round, the pending step of every one of them is
scored by one `Scorer.score_steps` call (a row holds one chain's suffixes and reads that chain's cache, so a
chain's scores do not depend on its call-mates and the orders are those of pruning each chain alone). A chain that
finishes is handed back at once and the next one starts, so the calls stay full until the dataset runs out.
"""

from __future__ import annotations

import dataclasses
from typing import Generic, Hashable, Iterable, Iterator, TypeVar

from jaxprune.pruning.greedy import PruneSteps, PruneTrace
from jaxprune.pruning.scoring import Scorer, StepRequest, StepScores

Key = TypeVar("Key", bound=Hashable)


@dataclasses.dataclass
class _Chain(Generic[Key]):
    key: Key
    steps: PruneSteps
    request: StepRequest | None = None
    trace: PruneTrace | None = None
    token_forwards: int = 0  # its base passes plus its share of the kernel calls its steps were scored in

    def advance(self, scorer: Scorer, scores: StepScores | None) -> bool:
        """Sends the chain its step's scores (None: starts it) and runs it to its next request; True when it has
        finished. The base passes it runs meanwhile are its own token-forwards."""
        before = scorer.forward_tokens
        try:
            self.request = next(self.steps) if scores is None else self.steps.send(scores)
        except StopIteration as finished:
            self.trace = finished.value
        self.token_forwards += scorer.forward_tokens - before
        return self.trace is not None


def prune_together(scorer: Scorer, chains: Iterable[tuple[Key, PruneSteps]], *,
                   chains_per_call: int) -> Iterator[tuple[Key, PruneTrace, int]]:
    """Runs the chains' pruning generators, `chains_per_call` at a time, scoring their steps together; yields
    `(key, trace, token_forwards)` for each chain as it finishes (not in input order)."""
    if chains_per_call < 1:
        raise ValueError(f"chains_per_call must be >= 1, got {chains_per_call}")
    waiting = iter(chains)
    in_flight: list[_Chain] = []
    while True:
        while len(in_flight) < chains_per_call:
            job = next(waiting, None)
            if job is None:
                break
            chain = _Chain(*job)
            if chain.advance(scorer, None):  # methods without greedy steps finish before their first request
                yield chain.key, chain.trace, chain.token_forwards
            else:
                in_flight.append(chain)
        if not in_flight:
            return
        scores = scorer.score_steps([chain.request for chain in in_flight])
        still_running = []
        for chain, step in zip(in_flight, scores):
            chain.token_forwards += step.token_forwards
            if chain.advance(scorer, step):
                yield chain.key, chain.trace, chain.token_forwards
            else:
                still_running.append(chain)
        in_flight = still_running
