"""What a task format is, and the registry of them: a new dataset is one file with one `Task` subclass, plus its test.

A task format knows everything that differs between datasets: the system prompts that ask for its answer format,
how a solution splits into reasoning and answer, how the final answer is read and checked, how a raw record of its
dataset becomes a question, which hub ids hold it, and the length percentile its chains are filtered at (SPEC
sections 2 and 4). Nothing outside `jaxprune/tasks/` compares a dataset's name with a string.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from jaxprune.data.records import RecordError

TASKS: dict[str, "Task"] = {}
CONCLUSION_PHRASES = ("Hence, the", "Thus, the", "Therefore, the", "So, the")


class Task:
    """One answer format. Subclasses set the class attributes and implement the four methods."""

    name: ClassVar[str]
    system_prompts: ClassVar[dict[str, str]]  # prompt name -> text; the one named like the task is its default
    length_percentile: ClassVar[float]       # chains longer than this percentile (teacher tokens) are dropped
    hub_ids: ClassVar[dict[str, str | None]] = {}  # hub dataset id -> its subset
    name_hints: ClassVar[tuple[str, ...]] = ()  # a file or folder name holding one of these is this task's

    @property
    def system_prompt(self) -> str:
        return self.system_prompts[self.name]

    def split(self, text: str) -> tuple[str, str] | None:
        """`(reasoning, answer)` of a solution without a think block, or None when it has no answer marker."""
        raise NotImplementedError

    def extract(self, answer: str) -> str | None:
        """The normalised final answer in an answer span (or a whole output); None when there is none."""
        raise NotImplementedError

    def matches(self, prediction: str, gold: str) -> bool:
        """Whether an extracted prediction equals the gold answer."""
        raise NotImplementedError

    def question(self, raw: dict[str, Any], where: str) -> tuple[str, str, str | None]:
        """`(question, gold, solution or None)` of one raw record of this task's dataset; errors name `where`."""
        raise NotImplementedError


def register(cls: type[Task]) -> type[Task]:
    if cls.name in TASKS:
        raise ValueError(f"task format {cls.name!r} is registered twice")
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(sorted(TASKS))})")
    return TASKS[name]


def split_at_conclusion(text: str) -> tuple[str, str] | None:
    """Split at the last conclusion phrase ("Thus, the ..."), as the reference does for MATH and MMLU-Pro."""
    starts = [text.rfind(phrase) for phrase in CONCLUSION_PHRASES if phrase in text]
    if not starts:
        return None
    return text[:max(starts)], text[max(starts):]


def after_conclusion(text: str) -> str:
    """What follows the last conclusion phrase's first character (the whole text without one)."""
    return text[max((text.rfind(p) for p in CONCLUSION_PHRASES), default=-1) + 1:]


def string_field(raw: dict[str, Any], field: str, where: str) -> str:
    """A required scalar field of a raw record, as a string; a missing or non-scalar one is a `RecordError`."""
    if field not in raw:
        raise RecordError(f"{where}: missing field '{field}'")
    value = raw[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RecordError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    return str(value)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def first_number(text: str) -> str | None:
    """The first number in `text`, read through thousands separators and currency signs ("1,000.0" -> "1000")."""
    match = _NUMBER.search(text.replace("$", ""))
    if match is None:
        return None
    number = match.group(0).replace(",", "")
    return number[:-2] if number.endswith(".0") else number
