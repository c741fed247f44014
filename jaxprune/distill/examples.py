"""Student training examples: a chain at a chosen keep ratio as token ids with a loss mask.

The student learns `system + question -> pruned reasoning + answer` (SPEC section 5). The pruner's kept reasoning
tokens are decoded to text (the student may use another tokenizer); the chat is rendered with the student's
template, and only the assistant turn (reasoning, answer and the template's end-of-turn tokens) carries loss.
Any keep ratio at or above the one a chain was pruned to is a prefix of its deletion order; keep ratio 1 is the
unpruned chain.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxprune.data.prompts import generation_prompt, split_chain
from jaxprune.data.records import RecordError
from jaxprune.pruning.greedy import deletions_for


@dataclasses.dataclass(frozen=True)
class Example:
    """`tokens` of the whole rendered chat; `loss_mask[i]` says whether token i is a training target (predicted
    from tokens before it): true exactly on the assistant turn."""

    tokens: np.ndarray     # [length] int32
    loss_mask: np.ndarray  # [length] bool


def reasoning_at(record: dict[str, Any], pruner_tokenizer, keep_ratio: float) -> str:
    """The chain's reasoning text with its first `N - int(N * keep_ratio)` deletions applied."""
    if keep_ratio >= 1:
        return record["reasoning"]
    check_prunable(record, f"chain {record['id']!r}", keep_ratio)
    ids, order = record["reasoning_token_ids"], record["deletion_order"]
    deleted = set(order[:deletions_for(len(ids), keep_ratio)])
    return pruner_tokenizer.decode([token for i, token in enumerate(ids) if i not in deleted])


def kept_fraction(record: dict[str, Any], keep_ratio: float) -> float:
    """The share of the chain's reasoning tokens (the pruner's) that `reasoning_at` keeps: `keep_ratio` up to
    rounding, exactly 1 for an unpruned chain."""
    if keep_ratio >= 1:
        return 1.0
    length = len(record["reasoning_token_ids"])
    return (length - deletions_for(length, keep_ratio)) / length


def training_example(student_tokenizer, record: dict[str, Any], reasoning: str) -> Example:
    """The chat `system + question -> reasoning + answer` in the student's template, loss on the assistant turn:
    everything after the generation prompt, so a thinking chain's `<think>` is learned where the template leaves it
    to the model (Qwen3) and not where the prompt already ends with it (DeepSeek-R1 distills)."""
    split = split_chain(student_tokenizer, record["question"], reasoning, record["answer"], record.get("system"),
                        thinking=record.get("thinking") is True)
    tokens = split.chain()
    prompt = generation_prompt(student_tokenizer, record["question"], record.get("system"))
    given = len(prompt) if split.prompt[:len(prompt)] == prompt else len(split.prompt)
    return Example(tokens, np.arange(len(tokens)) >= given)


def check_prunable(record: dict[str, Any], where: str, keep_ratio: float) -> None:
    """Fails (naming file:line and field) unless `record` can give its reasoning at `keep_ratio`."""
    if keep_ratio >= 1:
        return
    for field in ("reasoning_token_ids", "deletion_order"):
        if not isinstance(record.get(field), list):
            raise RecordError(f"{where}: field '{field}' is missing; keep ratio {keep_ratio} needs a pruned chain "
                              "(the prune CLI's output)")
    needed = deletions_for(len(record["reasoning_token_ids"]), keep_ratio)
    if needed > len(record["deletion_order"]):
        raise RecordError(f"{where}: field 'deletion_order' has {len(record['deletion_order'])} deletions; keep "
                          f"ratio {keep_ratio} needs {needed}")
