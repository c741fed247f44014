"""An LLM annotator of functional roles, and its agreement with the deterministic tagger (SPEC section 6).

The paper labels tokens with an LLM. Here a local model (any `--model`, through our generation) is shown the six
categories with their priority rules and a chain's words, numbered, and asked for one JSON object mapping each
number to a category. The reply is repaired with `json-repair` and read leniently (category names in any case, a
missing or unknown label left out); agreement with `roles.tag_words` is reported as raw agreement and Cohen's kappa
over the words both labelled.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jaxprune.analysis.roles import CATEGORIES, tag_words

ANNOTATION_PROMPT = """You label the words of a math solution with their functional role. Categories, by priority \
(use the first that applies):
1. SYMBOLIC_MATH: part of a numeric or symbolic expression (digits, currency symbols, operators, equations).
2. META_DISCOURSE: narrates or structures the reasoning ("to find", "we need to", "first", "now", "so", step numbers).
3. COREFERENCE: refers back to an entity or quantity (she, her, he, it, they, we, this).
4. ENTITY_NAME: names a concrete entity or counted object (people's names, "pages", "apples").
5. VERBAL_MATH: arithmetic in words ("half", "twice", "total", "remaining", "more", "per").
6. FUNCTION: articles, prepositions, conjunctions, auxiliaries, punctuation, other words.
Answer with one JSON object mapping each word number to its category, e.g. {{"1": "SYMBOLIC_MATH", "2": "FUNCTION"}}.

Question: {question}
Words: {words}"""


def annotation_words(reasoning: str, question: str = "") -> list[tuple[str, str]]:
    """The chain's non-space pieces with the deterministic tagger's role: `(word, role)`."""
    return [(w.text, w.role) for w in tag_words(reasoning, question) if w.kind != "space"]


def annotation_prompt(words: Sequence[str], question: str) -> str:
    return ANNOTATION_PROMPT.format(question=question, words=" ".join(f"{i}:{w}" for i, w in enumerate(words, 1)))


def parse_labels(reply: str, count: int) -> list[str | None]:
    """Labels for words 1..count from a (possibly malformed) JSON reply; None where missing or unknown."""
    import json_repair

    parsed = json_repair.loads(reply[reply.find("{"):] if "{" in reply else "{}")
    labels: list[str | None] = [None] * count
    if not isinstance(parsed, dict):
        return labels
    for key, value in parsed.items():
        try:
            index = int(str(key).strip()) - 1
        except ValueError:
            continue
        label = str(value).strip().upper().replace(" ", "_")
        if 0 <= index < count and label in CATEGORIES:
            labels[index] = label
    return labels


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two labelings of the same items (NaN when chance agreement is certain)."""
    first, second = np.asarray(first), np.asarray(second)
    observed = float(np.mean(first == second))
    expected = sum(float(np.mean(first == c)) * float(np.mean(second == c)) for c in CATEGORIES)
    return float("nan") if expected == 1 else (observed - expected) / (1 - expected)


def agreement(chains: Sequence[dict], complete: Callable[[list[str]], list[str]]) -> dict:
    """Annotates each chain's words with `complete` (prompts -> replies) and compares with the tagger."""
    words = [annotation_words(chain["reasoning"], chain.get("question", "")) for chain in chains]
    replies = complete([annotation_prompt([w for w, _ in chain_words], chain.get("question", ""))
                        for chain, chain_words in zip(chains, words)])
    tagger, llm, total = [], [], 0
    for chain_words, reply in zip(words, replies):
        total += len(chain_words)
        for (_, role), label in zip(chain_words, parse_labels(reply, len(chain_words))):
            if label is not None:
                tagger.append(role)
                llm.append(label)
    if not llm:
        return {"words": total, "labelled_by_llm": 0, "agreement": float("nan"), "cohen_kappa": float("nan")}
    return {"words": total, "labelled_by_llm": len(llm), "agreement": float(np.mean(np.asarray(tagger) ==
                                                                                     np.asarray(llm))),
            "cohen_kappa": cohen_kappa(tagger, llm)}


def model_completer(model, tokenizer, max_new_tokens: int = 512, batch_size: int = 8):
    """`complete` for `agreement`: greedy chat completions from a local model."""
    from jaxprune.data.prompts import generation_prompt
    from jaxprune.data.teacher import end_of_turn_ids
    from jaxprune.generation import SamplingConfig, generate

    def complete(prompts: list[str]) -> list[str]:
        ids = [generation_prompt(tokenizer, prompt) for prompt in prompts]
        sampling = SamplingConfig(max_new_tokens=max_new_tokens, stop_token_ids=end_of_turn_ids(model, tokenizer))
        outputs = generate(model, ids, sampling, batch_size=min(batch_size, len(ids)),
                           pad_id=tokenizer.pad_token_id or 0)
        return [tokenizer.decode(output, skip_special_tokens=True) for output in outputs]

    return complete
