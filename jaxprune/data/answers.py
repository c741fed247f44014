"""Final answers: where the reasoning ends, what the answer is, and whether it is right (SPEC section 4).

* GSM8K: the answer is the last JSON object `{"answer": ...}` (repaired with `json-repair` when malformed); small
  models that write GSM8K's own `#### <number>` line instead are accepted too (the answer is then the first such
  line). The number is read through thousands
  separators, currency signs and trailing units, then checked with `math-verify`.
* MATH: the last `\\boxed{...}` after the last "Hence, the" / "Thus, the" / "Therefore, the" / "So, the"; checked
  with `math-verify`.
* MMLU-Pro: the option letter (A-J) after the same phrases; checked by equality.

A reasoning model's output (DeepSeek-R1 and its distills, Qwen3 in thinking mode) puts its reasoning inside
`<think>...</think>`; the reasoning is then exactly the inside of that block and the answer all that follows it.
"""

from __future__ import annotations

import re

DATASETS = ("gsm8k", "math", "mmlu_pro")
CONCLUSION_PHRASES = ("Hence, the", "Thus, the", "Therefore, the", "So, the")
_JSON_ANSWER = re.compile(r'\{\s*"answer"\s*:')
_HASH_ANSWER = re.compile(r"^####[^\n\d]*\d[^\n]*", re.MULTILINE)  # a #### line with a number
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_LETTER = re.compile(r"\b([A-J])\b")


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")


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
    """`(reasoning, answer)` split at the dataset's answer marker, or None if there is none: the last JSON answer or
    conclusion phrase, as in the reference.

    A GSM8K `#### <number>` answer is the first such line alone: as in GSM8K's own solutions that line ends the
    solution, and what a small model rambles on with after it (often the same line again and again) is dropped.
    An output with a think block is split at the block instead (`split_thinking`)."""
    _check_dataset(dataset)
    thinking = split_thinking(text)
    if thinking is not None:
        return thinking
    if dataset == "gsm8k":
        json_starts = [m.start() for m in _JSON_ANSWER.finditer(text)]
        if json_starts:
            return text[:json_starts[-1]], text[json_starts[-1]:]
        line = _HASH_ANSWER.search(text)
        return (text[:line.start()], line.group(0).rstrip()) if line else None
    starts = [text.rfind(phrase) for phrase in CONCLUSION_PHRASES if phrase in text]
    if not starts:
        return None
    return text[:max(starts)], text[max(starts):]


def _balanced_braces(text: str, open_index: int) -> str | None:
    depth = 0
    for index in range(open_index, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[open_index + 1: index]
    return None


def _number(text: str) -> str | None:
    match = _NUMBER.search(text.replace("$", ""))
    if match is None:
        return None
    number = match.group(0).replace(",", "")
    return number[:-2] if number.endswith(".0") else number


def extract_answer(answer: str, dataset: str) -> str | None:
    """The final answer in a chain's answer span (or whole output), normalised; None if there is none."""
    _check_dataset(dataset)
    if dataset == "gsm8k":
        starts = [m.start() for m in _JSON_ANSWER.finditer(answer)]
        if starts:
            import json_repair

            parsed = json_repair.loads(answer[starts[-1]:])
            value = parsed.get("answer") if isinstance(parsed, dict) else None
            return None if value is None else _number(str(value))
        line = _HASH_ANSWER.search(answer)
        return _number(line.group(0)[4:]) if line else None
    if dataset == "math":
        start = answer.rfind("\\boxed{")
        return None if start < 0 else _balanced_braces(answer, start + len("\\boxed"))
    tail = answer[max((answer.rfind(p) for p in CONCLUSION_PHRASES), default=-1) + 1:]
    letters = _LETTER.findall(tail)
    return letters[-1] if letters else None


def is_correct(prediction: str | None, gold: str, dataset: str) -> bool:
    """Whether an extracted prediction equals the gold answer (math-verify for GSM8K and MATH)."""
    _check_dataset(dataset)
    if prediction is None:
        return False
    if dataset == "mmlu_pro":
        return prediction.strip().upper() == gold.strip().upper()
    from math_verify import parse, verify

    if dataset == "gsm8k":
        gold = _number(gold) or gold
    return bool(verify(parse(f"${gold}$"), parse(f"${prediction}$")))
