"""Final answers: where the reasoning ends, what the answer is, and whether it is right (SPEC section 4).

Each dataset's answer format is a task in `jaxprune/tasks/` (GSM8K's JSON or `####` line, MATH's `\\boxed{}`, MMLU-Pro's
option letter); these functions take the dataset's name and add what is common to all of them.

A reasoning model's output (DeepSeek-R1 and its distills, Qwen3 in thinking mode) puts its reasoning inside
`<think>...</think>`; the reasoning is then exactly the inside of that block and the answer all that follows it.
"""

from __future__ import annotations

from jaxprune.tasks import TASKS, get_task

DATASETS = tuple(sorted(TASKS))
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_thinking(text: str) -> tuple[str, str] | None:
    """`(reasoning, answer)` of an output with a think block: the block's inside (newlines at its edges dropped, as
    chat templates render it) and what follows `</think>`; None without one. The opening tag may be missing: R1
    distills' prompts end with it, so their outputs start inside the block."""
    if THINK_CLOSE not in text:
        return None
    inside, answer = text.split(THINK_CLOSE, 1)
    if THINK_OPEN in inside:
        inside = inside.split(THINK_OPEN, 1)[1]
    return inside.strip("\n"), answer.lstrip("\n")


def split_reasoning_answer(text: str, dataset: str) -> tuple[str, str] | None:
    """`(reasoning, answer)` split at the dataset's answer marker (its task's `split`), or None if there is none; an
    output with a think block is split at the block instead (`split_thinking`)."""
    task = get_task(dataset)
    thinking = split_thinking(text)
    return thinking if thinking is not None else task.split(text)


def extract_answer(answer: str, dataset: str) -> str | None:
    """The final answer in a chain's answer span (or whole output), normalised; None if there is none."""
    return get_task(dataset).extract(answer)


def is_correct(prediction: str | None, gold: str, dataset: str) -> bool:
    """Whether an extracted prediction equals the gold answer (math-verify for GSM8K and MATH)."""
    task = get_task(dataset)
    return prediction is not None and task.matches(prediction, gold)
