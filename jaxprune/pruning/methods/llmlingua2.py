"""The TokenSkip / LLMLingua-2 baseline as a pruning method (the classifier and word mapping:
`jaxprune/pruning/llmlingua2.py`).

Lengths are matched per example (fair; the default: the order is cut at greedy's number of deletions) or per
dataset (the reference's: one keep rate searched over all chains in `prepare`; every process runs the same search,
so they agree).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from absl import logging

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning import llmlingua2
from jaxprune.pruning.greedy import PruneConfig, PruneTrace, deletions_for
from jaxprune.pruning.methods.base import PruningMethod, register
from jaxprune.pruning.methods.static import static_trace
from jaxprune.pruning.scoring import Scorer

LENGTH_MATCHING = ("example", "dataset")


@register
@dataclasses.dataclass(frozen=True)
class LLMLingua2(PruningMethod):
    name = "llmlingua2"
    help = ("Baseline (TokenSkip): LLMLingua-2's token classifier (--classifier) keeps words by probability; "
            "--length_matching per example or per dataset.")

    classifier: str = ""             # token-classification model path or hub id
    length_matching: str = "example"
    _state: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def check(self) -> None:
        if not self.classifier:
            raise ValueError("method 'llmlingua2' needs a classifier model (--classifier)")
        if self.length_matching not in LENGTH_MATCHING:
            raise ValueError(f"length_matching must be one of {', '.join(LENGTH_MATCHING)}, "
                             f"got {self.length_matching!r}")

    def prepare(self, chains: Sequence[tuple[dict[str, Any], TokenSplit]], tokenizer, config: PruneConfig) -> None:
        self._state.update(tokenizer=tokenizer, words={}, rate=None,
                           classifier=llmlingua2.KeepClassifier(self.classifier))
        if self.length_matching == "dataset":
            words = [self._words(record, split) for record, split in chains]
            self._state["rate"] = llmlingua2.dataset_rate(words, config.keep_ratio)
            logging.info("LLMLingua-2 dataset-level keep rate: %.4f", self._state["rate"])

    def _words(self, record: dict[str, Any], split: TokenSplit):
        key, words = str(record["id"]), self._state["words"]
        if key not in words:
            word_spans, word_probs = self._state["classifier"].word_probabilities(record["reasoning"])
            spans = llmlingua2.pruner_token_spans(self._state["tokenizer"], record["reasoning"], split.reasoning)
            words[key] = (llmlingua2.token_words(spans, word_spans), word_probs)
        return words[key]

    def prune(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step=None) -> PruneTrace:
        del start, on_step
        token_word, word_probs = self._words(record, split)
        order = llmlingua2.deletion_order(token_word, word_probs)
        if self._state["rate"] is None:
            order = order[: deletions_for(len(split.reasoning), config.keep_ratio)]
        else:
            kept = llmlingua2.words_kept_at_rate(word_probs, self._state["rate"])
            order = [t for t in order if token_word[t] >= 0 and token_word[t] not in kept]
        return static_trace(scorer, split, order)

    def record_fields(self) -> dict[str, Any]:
        return {"classifier": self.classifier, "length_matching": self.length_matching}
