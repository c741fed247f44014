"""The TokenSkip / LLMLingua-2 baseline as a pruning method (the classifier and word mapping:
`jaxprune/pruning/llmlingua2.py`).

TokenSkip's settings for math chains are the defaults (`--force_tokens=Step,:`, `--force_reserve_digit`,
`--drop_consecutive`). Lengths are matched per example (fair; the default: the order of word probabilities, forced
words at 1, is cut at greedy's number of deletions) or per dataset (the reference's: one rate searched over all chains
in `prepare`, each chain keeping what LLMLingua-2 keeps at that rate; every process runs the same search, so they
agree).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from absl import logging

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning import llmlingua2
from jaxprune.pruning.greedy import PruneConfig, PruneTrace, deletions_for
from jaxprune.pruning.methods.base import PruningMethod, register
from jaxprune.pruning.methods.static import static_trace
from jaxprune.pruning.scoring import Scorer

LENGTH_MATCHING = ("example", "dataset")


@dataclasses.dataclass(frozen=True)
class _Analysed:
    """A chain as LLMLingua-2 sees it: its classified chunks, every word's probability (chunks in order), and for each
    pruner reasoning token the index of its word (-1: before the first word)."""

    chunks: list
    probs: np.ndarray
    token_word: np.ndarray


@register
@dataclasses.dataclass(frozen=True)
class LLMLingua2(PruningMethod):
    name = "llmlingua2"
    help = ("Baseline (TokenSkip): LLMLingua-2's token classifier (--classifier) keeps words by probability, as the "
            "llmlingua package computes it; --length_matching per example or per dataset.")

    classifier: str = ""             # token-classification model path or hub id
    length_matching: str = "example"
    force_tokens: str = "Step,:"     # comma-separated words always kept (TokenSkip's for math chains)
    force_reserve_digit: bool = True  # words with a digit always kept (TokenSkip)
    drop_consecutive: bool = True     # a force token repeating the one before, nothing kept between, dropped
    _state: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def check(self) -> None:
        if not self.classifier:
            raise ValueError("method 'llmlingua2' needs a classifier model (--classifier)")
        if self.length_matching not in LENGTH_MATCHING:
            raise ValueError(f"length_matching must be one of {', '.join(LENGTH_MATCHING)}, "
                             f"got {self.length_matching!r}")

    def prepare(self, chains: Sequence[tuple[dict[str, Any], TokenSplit]], tokenizer, config: PruneConfig) -> None:
        force_tokens = [t for t in self.force_tokens.split(",") if t]
        compressor = llmlingua2.Compressor(self.classifier, force_tokens=force_tokens,
                                           force_reserve_digit=self.force_reserve_digit,
                                           drop_consecutive=self.drop_consecutive)
        self._state.update(tokenizer=tokenizer, compressor=compressor, analysed={}, rate=None)
        if self.length_matching == "dataset":
            analysed = [self._analyse(record, split) for record, split in chains]
            self._state["rate"] = llmlingua2.dataset_rate(
                lambda rate: float(np.mean([self._kept(a, rate).mean() for a in analysed])), config.keep_ratio)
            logging.info("LLMLingua-2 dataset-level rate: %.4f", self._state["rate"])

    def _analyse(self, record: dict[str, Any], split: TokenSplit) -> _Analysed:
        key, cache = str(record["id"]), self._state["analysed"]
        if key not in cache:
            text = record["reasoning"]
            chunks = self._state["compressor"].chunks(text)
            words = [word for chunk in chunks for word in chunk.words]
            spans = llmlingua2.pruner_token_spans(self._state["tokenizer"], text, split.reasoning)
            probs = np.concatenate([chunk.probs for chunk in chunks]) if chunks else np.zeros(0)
            cache[key] = _Analysed(chunks, probs, llmlingua2.token_words(spans, llmlingua2.word_spans(text, words)))
        return cache[key]

    def _kept(self, analysed: _Analysed, rate: float) -> np.ndarray:
        """Which pruner tokens LLMLingua-2 keeps at `rate` (those before the first word are kept)."""
        labels = self._state["compressor"].keep_labels(analysed.chunks, rate)
        word_kept = np.concatenate(labels) if labels else np.zeros(0, bool)
        return np.where(analysed.token_word >= 0, word_kept[np.maximum(analysed.token_word, 0)], True)

    def prune(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step=None) -> PruneTrace:
        del start, on_step
        analysed = self._analyse(record, split)
        order = llmlingua2.deletion_order(analysed.token_word, analysed.probs)
        if self._state["rate"] is None:
            order = order[: deletions_for(len(split.reasoning), config.keep_ratio)]
        else:
            kept = self._kept(analysed, self._state["rate"])
            order = [t for t in order if not kept[t]]
        return static_trace(scorer, split, order)

    def record_fields(self) -> dict[str, Any]:
        fields = {"classifier": self.classifier, "length_matching": self.length_matching}
        if self._state.get("rate") is not None:  # the one rate the dataset-level search found: compress_prompt's
            fields["llmlingua2_rate"] = self._state["rate"]
        return fields
