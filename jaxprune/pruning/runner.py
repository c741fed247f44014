"""Prunes a JSONL file of chains: validation first, then chains split across processes, progress, resume, merge.

Each process prunes its share of the chains into its part file (`jaxprune.data.process_parts`: fsync'd appends, so a
kill loses at most the chain in flight and a rerun skips the ids already written, once the records already there are
checked to come from the same settings); process 0 then merges the parts into `output` in input order. Each chain is
pruned by `jaxprune.pruning.chain_pruner.ChainPruner` (one record schema for every method; an input record carrying an
earlier run's `deletion_order` is extended, so a run to keep ratio 0.5 can extend one to 0.7).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any

from absl import logging
from tqdm import tqdm

from jaxprune.checkpoints.spec import DTYPES
from jaxprune.data.prompts import GSM8K_SYSTEM_PROMPT, TokenSplit
from jaxprune.data.process_parts import ProcessParts
from jaxprune.data.records import RecordError, read_chains
from jaxprune.pruning.chain_pruner import ChainPruner, SkippedChain, saved_mode
from jaxprune.pruning.greedy import PruneConfig
from jaxprune.pruning.methods import PruningMethod, make_method
from jaxprune.pruning.scoring import compiled_programs


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
    chains_per_call: int = 1             # chains pruned together, their steps sharing scoring calls (same orders)
    dtype: str = "float32"               # the dtype the caller loaded the model in; recorded, since bfloat16
                                         # scores can pick other tokens than float32 ones (not exact greedy)

    def __post_init__(self):
        if isinstance(self.method, str):
            object.__setattr__(self, "method", make_method(self.method))
        if self.chains_per_call < 1:
            raise ValueError(f"chains_per_call must be >= 1, got {self.chains_per_call}")
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


def prune_dataset(config: RunConfig, model, tokenizer, *, token_budget: int = 4096, mesh=None) -> dict[str, int]:
    """Prunes every chain of `config.input` into `config.output`; returns counts of done and skipped chains."""
    model_dtype = str(model.embed_tokens[...].dtype)
    if model_dtype != config.dtype:  # the recorded pruning mode must describe the model that pruned
        raise ValueError(f"the model is {model_dtype} but the run's dtype is {config.dtype!r}")
    chains = read_chains(config.input)[: config.max_chains]
    parts = ProcessParts(config.output)
    pruner = ChainPruner(model, tokenizer, config.method, model_name=config.model, system_prompt=config.system_prompt,
                         token_budget=token_budget, mesh=mesh)
    counts: collections.Counter = collections.Counter()
    splits, skipped = {}, {}
    for where, record in chains:  # tokenize and validate everything before any expensive work
        try:
            splits[where] = pruner.split(record)
        except SkippedChain as reason:
            if config.on_invalid == "fail":
                raise RecordError(f"{where}: {reason}") from None
            skipped[where] = str(reason)
    pruner.prepare([(record, splits[where]) for where, record in chains if where in splits], config.prune)
    with parts.appender(_same_run_check(config, {str(r["id"]): splits.get(w) for w, r in chains})) as appender:
        mine = parts.mine(chains)
        todo = [(where, r) for where, r in mine if str(r["id"]) not in appender.done_ids]
        counts["already done"] = len(mine) - len(todo)
        for where, _ in todo:
            if where in skipped:
                logging.warning("%s: skipped (%s)", where, skipped[where])
                counts[f"skipped: {skipped[where]}"] += 1
        progress = tqdm(total=len(todo) - sum(where in skipped for where, _ in todo), unit="chain", mininterval=1.0,
                        desc=f"pruning ({config.method.name})")
        deletions, started = {}, time.perf_counter()

        def on_step(where, done, total):
            deletions[where] = done
            rate = sum(deletions.values()) / (time.perf_counter() - started)
            progress.set_postfix(chain_step=f"{done}/{total}", deletions_per_s=f"{rate:.2f}", refresh=False)

        jobs = ((where, record, splits[where]) for where, record in todo if where not in skipped)
        for where, pruned in pruner.prune_many(jobs, config.prune, chains_per_call=config.chains_per_call,
                                               on_step=on_step):
            appender.append(pruned)
            counts["pruned"] += 1
            progress.update()
        progress.close()
    parts.merge([str(record["id"]) for _, record in chains])
    for reason, number in sorted(counts.items()):
        logging.info("%s: %d", reason, number)
    scorer = pruner.scorer
    logging.info("token-forwards: %d in base passes, %d in candidate suffixes; compiled scoring programs: %s",
                 scorer.base_forward_tokens, scorer.forward_tokens - scorer.base_forward_tokens, compiled_programs())
    return dict(counts)
