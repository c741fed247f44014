"""One chain record in, its pruned record out: the step the prune CLI (`runner.prune_dataset`) and the Python API
(`jaxprune.Pruner`) share.

A `ChainPruner` holds the model, tokenizer, scorer and pruning method; `split` tokenizes and checks a record (a chain
that cannot be pruned raises `SkippedChain` with the reason), `prune` orders its reasoning tokens and returns the
input record plus everything the pruning produced, in the one schema every method writes (README). An input record
that already carries a `deletion_order` of a method that extends orders (greedy, k per step) with the same settings
is resumed from it: its deletions are replayed and only the missing ones computed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator, Sequence

from jaxprune.checkpoints.spec import DTYPES
from jaxprune.data.prompts import TokenSplit, split_chain
from jaxprune.data.records import RecordError
from jaxprune.pruning.greedy import PruneConfig, PruneTrace, deletions_for
from jaxprune.pruning.methods import PruningMethod, make_method
from jaxprune.pruning.multi_chain import prune_together
from jaxprune.pruning.scoring import Scorer


class SkippedChain(Exception):
    """A chain that cannot be pruned; the message is the counted reason."""


def saved_mode(record: dict[str, Any]) -> dict[str, Any]:
    """A record's pruning mode in today's form. Older files: `{"exact": true, "dtype": ...}` or `{"exact": true}`
    or nothing (exact greedy, float32 unless named), or `deletions_per_step` > 1 (k per step)."""
    mode = dict(record.get("pruning_mode") or {"exact": True})
    if "method" in mode:
        return mode
    method = record.get("method", "greedy")
    dtype = mode.get("dtype", "float32")
    if method == "greedy" and mode.get("deletions_per_step", 1) > 1:
        return make_method("k_per_step", deletions_per_step=mode["deletions_per_step"]).mode(dtype)
    if method == "greedy" and "proxy" not in mode:
        return make_method("greedy").mode(dtype)
    return {"method": method, **mode}


class ChainPruner:
    """Prunes chain records with one model, tokenizer and method (see the module docstring). `model_name` is
    recorded as `pruner`; `system_prompt` is used for records without a `system` field."""

    def __init__(self, model, tokenizer, method: PruningMethod | str = "greedy", *, model_name: str = "",
                 system_prompt: str | None = None, token_budget: int = 4096, mesh=None):
        self.method = make_method(method) if isinstance(method, str) else method
        self.dtype = str(model.embed_tokens[...].dtype)
        if self.dtype not in DTYPES:
            raise ValueError(f"the model is {self.dtype}; pruning runs in one of {', '.join(DTYPES)}")
        self.tokenizer, self.model_name, self.system_prompt = tokenizer, model_name, system_prompt
        self.max_length = model.config.max_position_embeddings
        self.scorer = Scorer(model, token_budget=token_budget, mesh=mesh)

    @property
    def mode(self) -> dict[str, Any]:
        """Each record's `pruning_mode`: the method's name and settings, the dtype, and whether it is exact."""
        return self.method.mode(self.dtype)

    def split(self, record: dict[str, Any]) -> TokenSplit:
        split = split_chain(self.tokenizer, record["question"], record["reasoning"], record["answer"],
                            record.get("system", self.system_prompt), thinking=record.get("thinking") is True)
        if not split.reasoning:
            raise SkippedChain("empty reasoning")
        if not record["answer"].strip():
            raise SkippedChain("no answer")
        if len(split.prompt) + len(split.reasoning) + len(split.answer) > self.max_length:
            raise SkippedChain("longer than the model's maximum length")
        return split

    def prepare(self, chains: Sequence[tuple[dict[str, Any], TokenSplit]], config: PruneConfig) -> None:
        """Lets the method see the whole dataset first (e.g. LLMLingua-2's dataset-level rate)."""
        self.method.prepare(chains, self.tokenizer, config)

    def prune(self, record: dict[str, Any], split: TokenSplit, config: PruneConfig, *, where: str = "record",
              on_step: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """The pruned record of `record` (`where` names it in errors)."""
        report = None if on_step is None else (lambda _, done, total: on_step(done, total))
        [(_, pruned)] = self.prune_many([(where, record, split)], config, on_step=report)
        return pruned

    def prune_many(self, chains: Iterable[tuple[str, dict[str, Any], TokenSplit]], config: PruneConfig, *,
                   chains_per_call: int = 1, on_step: Callable[[str, int, int], None] | None = None,
                   ) -> Iterator[tuple[str, dict[str, Any]]]:
        """`(where, pruned record)` of each `(where, record, split)`, as each finishes; up to `chains_per_call`
        chains are pruned together, their greedy steps sharing kernel calls (`multi_chain.py`; same orders).
        `on_step(where, done, total)` reports each chain's progress."""
        def jobs():
            for where, record, split in chains:
                start = self._saved_trace(record, split, config, where)
                report = None if on_step is None else functools.partial(on_step, where)
                inputs[where] = record, split, start
                yield where, self.method.steps(self.scorer, split, record, config, start=start, on_step=report)

        inputs: dict[str, tuple] = {}
        for where, trace, spent in prune_together(self.scorer, jobs(), chains_per_call=chains_per_call):
            record, split, start = inputs.pop(where)
            spent += record.get("token_forwards", 0) if start else 0
            yield where, self._pruned_record(record, split, trace, config, spent)

    def _saved_trace(self, record, split: TokenSplit, config: PruneConfig, where: str) -> PruneTrace | None:
        """The progress an input record already carries, cut to the requested keep ratio."""
        if not self.method.extends_saved_orders or "deletion_order" not in record:
            return None
        for field, expected in (("method", self.method.name), ("objective", config.objective)):
            if record.get(field) != expected:
                raise RecordError(f"{where}: field '{field}'={record.get(field)!r} cannot be extended by a "
                                  f"{expected!r} run")
        saved = saved_mode(record)
        if saved != self.mode:
            raise RecordError(f"{where}: field 'pruning_mode'={saved} cannot be extended by a run with {self.mode}")
        if list(record.get("reasoning_token_ids", [])) != list(split.reasoning):
            raise RecordError(f"{where}: field 'reasoning_token_ids' does not match this tokenizer; cannot extend")
        keep = deletions_for(len(split.reasoning), config.keep_ratio)
        steps = record["step_log_likelihoods"]
        return PruneTrace(list(record["deletion_order"])[:keep], {k: list(v)[:keep] for k, v in steps.items()},
                          dict(record["original_log_likelihoods"]))

    def _pruned_record(self, record, split: TokenSplit, trace: PruneTrace, config: PruneConfig,
                       token_forwards: int) -> dict[str, Any]:
        deleted = set(trace.deletion_order)
        kept = [token for i, token in enumerate(split.reasoning) if i not in deleted]
        out = dict(record)
        out.update(
            prompt_token_ids=list(split.prompt),
            reasoning_token_ids=list(split.reasoning),
            answer_token_ids=list(split.answer),
            method=self.method.name,
            objective=config.objective,
            pruning_mode=self.mode,
            pruner=self.model_name,
            keep_ratio=config.keep_ratio,
            deletion_order=trace.deletion_order,
            step_log_likelihoods=trace.log_likelihoods,
            original_log_likelihoods=trace.original,
            pruned_reasoning=self.tokenizer.decode(kept),
            achieved_keep_ratio=len(kept) / len(split.reasoning),
            token_forwards=token_forwards,
        )
        out.update(self.method.record_fields())
        out.update(trace.details)
        return out
