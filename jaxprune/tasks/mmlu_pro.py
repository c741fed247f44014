"""MMLU-Pro: multiple choice with up to ten options; the answer the option letter (A-J) after the last conclusion
phrase, checked by equality. Raw records: `question`, `options` (appended to the question as "A. ..." lines),
`answer` (the letter) and optionally `cot_content` (a worked solution).
"""

from __future__ import annotations

import re

from jaxprune.data.records import RecordError
from jaxprune.tasks.base import Task, after_conclusion, register, split_at_conclusion, string_field

OPTION_LETTERS = "ABCDEFGHIJ"
_LETTER = re.compile(r"\b([A-J])\b")


@register
class MMLUPro(Task):
    name = "mmlu_pro"
    system_prompts = {"mmlu_pro": ("Answer the multiple-choice question by reasoning step by step. End your solution "
                                   "exactly in this format: Thus, the final answer is: <letter>")}
    length_percentile = 90.0
    hub_ids = {"TIGER-Lab/MMLU-Pro": None}
    name_hints = ("mmlu_pro",)

    def split(self, text):
        return split_at_conclusion(text)

    def extract(self, answer):
        letters = _LETTER.findall(after_conclusion(answer))
        return letters[-1] if letters else None

    def matches(self, prediction, gold):
        return prediction.strip().upper() == gold.strip().upper()

    def question(self, raw, where):
        options = raw.get("options")
        if not isinstance(options, (list, tuple)) or not 2 <= len(options) <= len(OPTION_LETTERS):
            raise RecordError(f"{where}: field 'options' must be a list of 2 to {len(OPTION_LETTERS)} strings")
        lines = [f"{letter}. {option}" for letter, option in zip(OPTION_LETTERS, options)]
        question = string_field(raw, "question", where) + "\n\nOptions:\n" + "\n".join(lines)
        gold = string_field(raw, "answer", where).strip().upper()
        if gold not in OPTION_LETTERS[: len(options)]:
            raise RecordError(f"{where}: field 'answer'={gold!r} is not one of the option letters")
        return question, gold, raw.get("cot_content") or None
