"""Prunes a JSONL file of chains: validation first, then chains split across processes, progress, resume, merge.

Each process prunes its share of the chains into its part file (`jaxprune.data.process_parts`: fsync'd appends, so a
kill loses at most the chain in flight and a rerun skips the ids already written); process 0 then merges the parts
into `output` in input order.

Every method (`jaxprune/pruning/methods/`) writes the same record schema. An input record that already carries a
`deletion_order` of a method that extends orders (greedy, k per step) with the same settings is resumed from it:
its deletions are replayed and only the missing ones computed, so a run to keep ratio 0.5 can extend one to 0.7.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any

from absl import logging
from tqdm import tqdm

from jaxprune.data.prompts import GSM8K_SYSTEM_PROMPT, TokenSplit, split_chain
from jaxprune.data.process_parts import ProcessParts
from jaxprune.data.records import RecordError, read_chains
from jaxprune.pruning.greedy import PruneConfig, PruneTrace, deletions_for
from jaxprune.pruning.methods import PruningMethod, make_method
from jaxprune.pruning.scoring import Scorer, compiled_programs

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    input: str
    output: str
    prune: PruneConfig
    method: PruningMethod | str = "greedy"  # a method, or a registered name (its default settings)
    model: str = ""                      # recorded as `pruner` in the output
    system_prompt: str | None = GSM8K_SYSTEM_PROMPT  # used when a record has no `system`
    on_invalid: str = "skip"             # or "fail": chains that cannot be pruned
    max_chains: int | None = None
    dtype: str = "float32"               # the dtype the caller loaded the model in; recorded, since bfloat16
                                         # scores can pick other tokens than float32 ones (not exact greedy)

    def __post_init__(self):
        if isinstance(self.method, str):
            object.__setattr__(self, "method", make_method(self.method))
        if self.on_invalid not in ("skip", "fail"):
            raise ValueError(f"on_invalid must be 'skip' or 'fail', got {self.on_invalid!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if os.path.abspath(self.input) == os.path.abspath(self.output):
            raise ValueError("--output must differ from --input")

    @property
    def mode(self) -> dict[str, Any]:
        """Each record's `pruning_mode`: the method's name and settings, the dtype, and whether it is exact."""
        return self.method.mode(self.dtype)


class SkippedChain(Exception):
    """A chain that cannot be pruned; the message is the counted reason."""


def _split(record: dict[str, Any], tokenizer, config: RunConfig, max_length: int) -> TokenSplit:
    split = split_chain(tokenizer, record["question"], record["reasoning"], record["answer"],
                        record.get("system", config.system_prompt))
    if not split.reasoning:
        raise SkippedChain("empty reasoning")
    if not record["answer"].strip():
        raise SkippedChain("no answer")
    if len(split.prompt) + len(split.reasoning) + len(split.answer) > max_length:
        raise SkippedChain("longer than the model's maximum length")
    return split


def _saved_trace(record: dict[str, Any], split: TokenSplit, config: RunConfig, where: str) -> PruneTrace | None:
    """The progress an input record already carries (an earlier output of the same method and settings), cut to
    the requested keep ratio."""
    if not config.method.extends_saved_orders or "deletion_order" not in record:
        return None
    for field, expected in (("method", config.method.name), ("objective", config.prune.objective)):
        if record.get(field) != expected:
            raise RecordError(f"{where}: field '{field}'={record.get(field)!r} cannot be extended by a "
                              f"{expected!r} run")
    saved = saved_mode(record)
    if saved != config.mode:
        raise RecordError(f"{where}: field 'pruning_mode'={saved} cannot be extended by a run with {config.mode}")
    if list(record.get("reasoning_token_ids", [])) != list(split.reasoning):
        raise RecordError(f"{where}: field 'reasoning_token_ids' does not match this tokenizer; cannot extend")
    keep = deletions_for(len(split.reasoning), config.prune.keep_ratio)
    steps = record["step_log_likelihoods"]
    return PruneTrace(list(record["deletion_order"])[:keep], {k: list(v)[:keep] for k, v in steps.items()},
                      dict(record["original_log_likelihoods"]))


def _same_run_check(config: RunConfig, splits_by_id: dict[str, TokenSplit | None]):
    """Vets the records already in the output before a rerun adds to it: they must come from a run with this
    method and settings, objective, pruner, keep ratio and prompt, or the file would mix two experiments."""
    expected = {"method": config.method.name, "pruning_mode": config.mode, "objective": config.prune.objective,
                "pruner": config.model, "keep_ratio": config.prune.keep_ratio}

    def check(record: dict[str, Any], where: str) -> None:
        for field, value in expected.items():
            saved = saved_mode(record) if field == "pruning_mode" else record.get(field)
            if saved != value:
                raise RecordError(f"{where}: field '{field}'={saved!r}, but this run writes {value!r}; a rerun only "
                                  "resumes the same settings (choose another --output, or remove the file)")
        split = splits_by_id.get(str(record.get("id")))
        if split is not None and list(record.get("prompt_token_ids", [])) != list(split.prompt):
            raise RecordError(f"{where}: field 'prompt_token_ids' differs from this run's prompt for the chain "
                              "(another system prompt or tokenizer); a rerun only resumes the same settings")
    return check


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


def pruned_record(record: dict[str, Any], split: TokenSplit, trace: PruneTrace, tokenizer, config: RunConfig,
                  token_forwards: int) -> dict[str, Any]:
    """The input record plus everything the pruning produced (one schema for every method: README)."""
    deleted = set(trace.deletion_order)
    kept = [token for i, token in enumerate(split.reasoning) if i not in deleted]
    out = dict(record)
    out.update(
        prompt_token_ids=list(split.prompt),
        reasoning_token_ids=list(split.reasoning),
        answer_token_ids=list(split.answer),
        method=config.method.name,
        objective=config.prune.objective,
        pruning_mode=config.mode,
        pruner=config.model,
        keep_ratio=config.prune.keep_ratio,
        deletion_order=trace.deletion_order,
        step_log_likelihoods=trace.log_likelihoods,
        original_log_likelihoods=trace.original,
        pruned_reasoning=tokenizer.decode(kept),
        achieved_keep_ratio=len(kept) / len(split.reasoning),
        token_forwards=token_forwards,
    )
    out.update(config.method.record_fields())
    return out


def prune_dataset(config: RunConfig, model, tokenizer, *, token_budget: int = 4096, mesh=None) -> dict[str, int]:
    """Prunes every chain of `config.input` into `config.output`; returns counts of done and skipped chains."""
    model_dtype = str(model.embed_tokens[...].dtype)
    if model_dtype != config.dtype:  # the recorded pruning mode must describe the model that pruned
        raise ValueError(f"the model is {model_dtype} but the run's dtype is {config.dtype!r}")
    chains = read_chains(config.input)[: config.max_chains]
    parts = ProcessParts(config.output)
    scorer = Scorer(model, token_budget=token_budget, mesh=mesh)
    max_length = model.config.max_position_embeddings
    counts: collections.Counter = collections.Counter()
    splits, skipped = {}, {}
    for where, record in chains:  # tokenize and validate everything before any expensive work
        try:
            splits[where] = _split(record, tokenizer, config, max_length)
        except SkippedChain as reason:
            if config.on_invalid == "fail":
                raise RecordError(f"{where}: {reason}") from None
            skipped[where] = str(reason)
    method = config.method
    method.prepare([(record, splits[where]) for where, record in chains if where in splits], tokenizer, config.prune)
    with parts.appender(_same_run_check(config, {str(r["id"]): splits.get(w) for w, r in chains})) as appender:
        mine = parts.mine(chains)
        todo = [(where, r) for where, r in mine if str(r["id"]) not in appender.done_ids]
        counts["already done"] = len(mine) - len(todo)
        steps_done, started = 0, time.perf_counter()
        progress = tqdm(todo, desc=f"pruning ({method.name})", unit="chain", mininterval=1.0)
        for where, record in progress:
            if where in skipped:
                logging.warning("%s: skipped (%s)", where, skipped[where])
                counts[f"skipped: {skipped[where]}"] += 1
                continue
            split = splits[where]

            def on_step(done, total):
                progress.set_postfix(step=f"{done}/{total}",
                                     steps_per_s=f"{(steps_done + done) / (time.perf_counter() - started):.2f}")

            start = _saved_trace(record, split, config, where)
            before = scorer.forward_tokens
            trace = method.prune(scorer, split, record, config.prune, start=start, on_step=on_step)
            steps_done += len(trace.deletion_order)
            spent = scorer.forward_tokens - before + (record.get("token_forwards", 0) if start else 0)
            appender.append(pruned_record(record, split, trace, tokenizer, config, spent))
            counts["pruned"] += 1
    parts.merge([str(record["id"]) for _, record in chains])
    for reason, number in sorted(counts.items()):
        logging.info("%s: %d", reason, number)
    logging.info("token-forwards: %d in base passes, %d in candidate suffixes; compiled scoring programs: %s",
                 scorer.base_forward_tokens, scorer.forward_tokens - scorer.base_forward_tokens, compiled_programs())
    return dict(counts)
