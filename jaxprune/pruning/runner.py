"""Prunes a JSONL file of chains: validation first, then chains split across processes, progress, resume, merge.

Each process prunes its share of the chains into its part file (`jaxprune.data.process_parts`: fsync'd appends, so a
kill loses at most the chain in flight and a rerun skips the ids already written); process 0 then merges the parts
into `output` in input order.

An input record that already carries a greedy `deletion_order` (an earlier output) is resumed from it: its
deletions are replayed and only the missing ones computed, so a run to keep ratio 0.5 can extend one to 0.7.
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
from jaxprune.pruning import llmlingua2
from jaxprune.pruning.baselines import BASELINES, baseline_trace, static_trace
from jaxprune.pruning.greedy import PruneConfig, PruneTrace, deletions_for, greedy_prune
from jaxprune.pruning.scoring import Scorer

METHODS = ("greedy",) + BASELINES + ("llmlingua2",)
LENGTH_MATCHING = ("example", "dataset")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    input: str
    output: str
    prune: PruneConfig
    method: str = "greedy"
    model: str = ""                      # recorded as `pruner` in the output
    seed: int = 0
    system_prompt: str | None = GSM8K_SYSTEM_PROMPT  # used when a record has no `system`
    on_invalid: str = "skip"             # or "fail": chains that cannot be pruned
    max_chains: int | None = None
    classifier: str | None = None        # llmlingua2: token-classification model path or hub id
    length_matching: str = "example"     # llmlingua2: "example" (fair) or "dataset" (the reference's rate search)
    dtype: str = "float32"               # the dtype the caller loaded the model in; recorded, since bfloat16
                                         # scores can pick other tokens than float32 ones (not exact greedy)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.on_invalid not in ("skip", "fail"):
            raise ValueError(f"on_invalid must be 'skip' or 'fail', got {self.on_invalid!r}")
        if self.method == "llmlingua2" and not self.classifier:
            raise ValueError("method 'llmlingua2' needs a classifier model (--classifier)")
        if self.length_matching not in LENGTH_MATCHING:
            raise ValueError(f"length_matching must be one of {', '.join(LENGTH_MATCHING)}, "
                             f"got {self.length_matching!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if os.path.abspath(self.input) == os.path.abspath(self.output):
            raise ValueError("--output must differ from --input")


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
    """The greedy progress an input record already carries, cut to the requested keep ratio."""
    if config.method != "greedy" or "deletion_order" not in record:
        return None
    for field, expected in (("method", "greedy"), ("objective", config.prune.objective)):
        if record.get(field) != expected:
            raise RecordError(f"{where}: field '{field}'={record.get(field)!r} cannot be extended by a "
                              f"{expected!r} run")
    saved, mode = _saved_mode(record), _mode(config)
    if saved != mode:
        raise RecordError(f"{where}: field 'pruning_mode'={saved} cannot be extended by a run with {mode}")
    if list(record.get("reasoning_token_ids", [])) != list(split.reasoning):
        raise RecordError(f"{where}: field 'reasoning_token_ids' does not match this tokenizer; cannot extend")
    keep = deletions_for(len(split.reasoning), config.prune.keep_ratio)
    steps = record["step_log_likelihoods"]
    return PruneTrace(list(record["deletion_order"])[:keep], {k: list(v)[:keep] for k, v in steps.items()},
                      dict(record["original_log_likelihoods"]))


def _saved_mode(record: dict[str, Any]) -> dict[str, Any]:
    """A record's pruning mode; files written before the mode named its dtype (`{"exact": true}`) or before it
    existed at all (`{}`) were exact float32 runs."""
    mode = record.get("pruning_mode") or {"exact": True}
    return {"dtype": "float32", **mode} if mode == {"exact": True} else mode


def _mode(config: RunConfig) -> dict[str, Any]:
    """The pruning mode as recorded (never an empty object, which parquet cannot store). Only float32 is exact:
    bfloat16 score noise exceeds the tie tolerance, so it can delete other tokens than exact greedy would."""
    prune = config.prune
    if prune.is_exact and config.dtype == "float32":
        return {"exact": True, "dtype": "float32"}
    mode: dict[str, Any] = {"exact": False, "dtype": config.dtype, "deletions_per_step": prune.deletions_per_step}
    if prune.proxy is not None:
        mode.update(proxy=prune.proxy, proxy_top_k=prune.proxy_top_k)
    return mode


def pruned_record(record: dict[str, Any], split: TokenSplit, trace: PruneTrace, tokenizer,
                  config: RunConfig) -> dict[str, Any]:
    """The input record plus everything the pruning produced."""
    deleted = set(trace.deletion_order)
    kept = [token for i, token in enumerate(split.reasoning) if i not in deleted]
    out = dict(record)
    out.update(
        prompt_token_ids=list(split.prompt),
        reasoning_token_ids=list(split.reasoning),
        answer_token_ids=list(split.answer),
        method=config.method,
        objective=config.prune.objective,
        pruning_mode=_mode(config),
        pruner=config.model,
        keep_ratio=config.prune.keep_ratio,
        deletion_order=trace.deletion_order,
        step_log_likelihoods=trace.log_likelihoods,
        original_log_likelihoods=trace.original,
        pruned_reasoning=tokenizer.decode(kept),
        achieved_keep_ratio=len(kept) / len(split.reasoning),
    )
    if config.method == "uniform":
        out["seed"] = config.seed
    if config.method == "llmlingua2":
        out.update(classifier=config.classifier, length_matching=config.length_matching)
    return out


class _LinguaOrders:
    """LLMLingua-2 deletion orders; with dataset-level length matching, one keep rate is searched over all chains
    first (every process does the same search, so they agree)."""

    def __init__(self, config: RunConfig, tokenizer, chains, max_length: int):
        self.config, self.tokenizer = config, tokenizer
        self.classifier = llmlingua2.KeepClassifier(config.classifier)
        self.words: dict[str, tuple] = {}
        self.rate = None
        if config.length_matching == "dataset":
            for _, record in chains:
                try:
                    self._words(record, _split(record, tokenizer, config, max_length))
                except SkippedChain:
                    continue
            self.rate = llmlingua2.dataset_rate(list(self.words.values()), config.prune.keep_ratio)
            logging.info("LLMLingua-2 dataset-level keep rate: %.4f", self.rate)

    def _words(self, record, split: TokenSplit):
        key = str(record["id"])
        if key not in self.words:
            words, word_probs = self.classifier.word_probabilities(record["reasoning"])
            spans = llmlingua2.pruner_token_spans(self.tokenizer, record["reasoning"], split.reasoning)
            self.words[key] = (llmlingua2.token_words(spans, words), word_probs)
        return self.words[key]

    def order(self, record, split: TokenSplit) -> list[int]:
        token_word, word_probs = self._words(record, split)
        order = llmlingua2.deletion_order(token_word, word_probs)
        if self.rate is None:
            return order[: deletions_for(len(split.reasoning), self.config.prune.keep_ratio)]
        kept = llmlingua2.words_kept_at_rate(word_probs, self.rate)
        return [t for t in order if token_word[t] >= 0 and token_word[t] not in kept]


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
    lingua = _LinguaOrders(config, tokenizer, chains, max_length) if config.method == "llmlingua2" else None
    with parts.appender() as appender:
        mine = parts.mine(chains)
        todo = [(where, r) for where, r in mine if str(r["id"]) not in appender.done_ids]
        counts["already done"] = len(mine) - len(todo)
        steps_done, started = 0, time.perf_counter()
        progress = tqdm(todo, desc=f"pruning ({config.method})", unit="chain", mininterval=1.0)
        for where, record in progress:
            try:
                split = _split(record, tokenizer, config, max_length)
            except SkippedChain as reason:
                if config.on_invalid == "fail":
                    raise RecordError(f"{where}: {reason}") from None
                logging.warning("%s: skipped (%s)", where, reason)
                counts[f"skipped: {reason}"] += 1
                continue

            def on_step(done, total):
                progress.set_postfix(step=f"{done}/{total}",
                                     steps_per_s=f"{(steps_done + done) / (time.perf_counter() - started):.2f}")

            if config.method == "greedy":
                trace = greedy_prune(scorer, split, config.prune, _saved_trace(record, split, config, where), on_step)
                steps_done += len(trace.deletion_order)
            elif config.method == "llmlingua2":
                trace = static_trace(scorer, split, lingua.order(record, split))
            else:
                trace = baseline_trace(config.method, scorer, split, config.prune.keep_ratio, config.seed,
                                       str(record["id"]))
            appender.append(pruned_record(record, split, trace, tokenizer, config))
            counts["pruned"] += 1
    parts.merge([str(record["id"]) for _, record in chains])
    for reason, number in sorted(counts.items()):
        logging.info("%s: %d", reason, number)
    return dict(counts)
