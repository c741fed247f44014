"""The TokenSkip / LLMLingua-2 baseline: a token classifier's keep probabilities, mapped onto the pruner's tokens.

LLMLingua-2 (`microsoft/llmlingua-2-xlm-roberta-large-meetingbank`, trained on GPT-4 labels) scores every classifier
token with the probability of label 1 ("keep"), in chunks of at most 500 tokens, and keeps or drops whole words by
the mean probability of their tokens. We compute exactly that with `transformers` (the `llmlingua` package exposes
only the compressed text, not the probabilities, and hard-codes XLM-R's word markers), for any token-classification
model path the user supplies. Each reasoning token of the pruner takes the probability of the word it overlaps (a
whitespace-only token that of the word before it), which gives a full static deletion order.

Two ways to match lengths:
* per example (fair; the default): cut the order at the same number of deletions as greedy;
* per dataset (the reference's): one keep rate for all chains, found by binary search until the mean keep ratio,
  counted in pruner tokens, is within 0.005 of the target; each chain keeps its top `ceil(rate * words)` words.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
from absl import logging

CHUNK_TOKENS = 500
RATE_TOLERANCE = 0.005


class KeepClassifier:
    """A token-classification model whose label 1 means "keep" (LLMLingua-2's convention)."""

    def __init__(self, model_path: str):
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
        if not self.tokenizer.is_fast:
            raise ValueError(f"{model_path}: the LLMLingua-2 baseline needs a fast tokenizer (for character offsets)")
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id  # XLM-R: <s> chunk </s>
        self.prefix, self.suffix = ([] if cls is None else [cls]), ([] if sep is None else [sep])
        self.model = AutoModelForTokenClassification.from_pretrained(model_path, trust_remote_code=False,
                                                                     use_safetensors=True).eval()

    def word_probabilities(self, text: str) -> tuple[list[tuple[int, int]], np.ndarray]:
        """Whitespace-delimited words as character spans, and each word's mean keep probability."""
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        encoding = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        probabilities = np.zeros(len(ids))
        for start in range(0, len(ids), CHUNK_TOKENS):
            piece = ids[start: start + CHUNK_TOKENS]
            first, chunk = len(self.prefix), self.prefix + piece + self.suffix
            with self.torch.inference_mode():
                logits = self.model(self.torch.tensor([chunk])).logits[0]
            keep = self.torch.softmax(logits.float(), dim=-1)[:, 1].numpy()
            probabilities[start: start + len(piece)] = keep[first: first + len(piece)]
        word_probs = np.zeros(len(words))
        for w, (begin, end) in enumerate(words):
            inside = [p for p, (s, e) in zip(probabilities, offsets) if s < end and e > begin]
            word_probs[w] = np.mean(inside) if inside else 0.0
        return words, word_probs


def token_words(token_spans: Sequence[tuple[int, int]], words: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each pruner token (character span), the index of the word it overlaps; whitespace-only tokens take the
    word before them (-1 before the first word)."""
    result, previous = np.full(len(token_spans), -1), -1
    for t, (begin, end) in enumerate(token_spans):
        overlapping = [w for w, (s, e) in enumerate(words) if s < end and e > begin]
        previous = overlapping[-1] if overlapping else previous
        result[t] = overlapping[0] if overlapping else previous
    return result


def pruner_token_spans(tokenizer, text: str, token_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character spans of the pruner's reasoning tokens (tokenized on their own, as in the prune split)."""
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    if list(encoding["input_ids"]) != list(token_ids):
        raise ValueError("the reasoning tokens do not match the pruner tokenizer's offsets")
    return [tuple(span) for span in encoding["offset_mapping"]]


def deletion_order(token_word: np.ndarray, word_probs: np.ndarray) -> list[int]:
    """Pruner tokens from least to most likely kept; ties (tokens of one word) to the lowest position."""
    probability = np.where(token_word >= 0, word_probs[np.maximum(token_word, 0)], 0.0)
    return [int(i) for i in np.lexsort((np.arange(len(probability)), probability))]


def words_kept_at_rate(word_probs: np.ndarray, rate: float) -> set[int]:
    """LLMLingua-2's rule for one chain: keep the `ceil(rate * words)` most probable words."""
    keep = math.ceil(rate * len(word_probs))
    return set(int(w) for w in np.lexsort((np.arange(len(word_probs)), -word_probs))[:keep])


def dataset_rate(chains: Sequence[tuple[np.ndarray, np.ndarray]], target: float) -> float:
    """The single word keep rate whose dataset-mean keep ratio (in pruner tokens) is within 0.005 of `target`.

    `chains` holds, per chain, `(token_word, word_probs)`."""
    def mean_keep_ratio(rate: float) -> float:
        ratios = []
        for token_word, word_probs in chains:
            kept = words_kept_at_rate(word_probs, rate)
            ratios.append(np.mean([w in kept or w < 0 for w in token_word]))
        return float(np.mean(ratios))

    low, high = 0.0, 1.0
    rate = target
    for _ in range(50):
        achieved = mean_keep_ratio(rate)
        if abs(achieved - target) <= RATE_TOLERANCE:
            return rate
        low, high = (rate, high) if achieved < target else (low, rate)
        rate = (low + high) / 2
    logging.warning("LLMLingua-2 rate search: best mean keep ratio %.4f misses the target %.4f by more than %.3f "
                    "(too few words to match finely)", achieved, target, RATE_TOLERANCE)
    return rate
