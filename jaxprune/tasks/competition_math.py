"""MATH (competition mathematics; also CHAMP): the answer in the last `\\boxed{...}`, checked with `math-verify`.

Solutions split at the last "Hence, the" / "Thus, the" / "Therefore, the" / "So, the". Raw records: `problem` (or
`question`), `solution`, and `answer` (gold; from the solution's last `\\boxed{}` when absent).
"""

from __future__ import annotations

from jaxprune.data.records import RecordError
from jaxprune.tasks.base import Task, register, split_at_conclusion, string_field


def _balanced_braces(text: str, open_index: int) -> str | None:
    depth = 0
    for index in range(open_index, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[open_index + 1: index]
    return None


@register
class CompetitionMath(Task):
    name = "math"
    system_prompts = {"math": ("Solve the math problem step by step. End your solution with the final answer exactly "
                               "in this format: Thus, the final answer is: \\boxed{<answer>}")}
    length_percentile = 90.0
    hub_ids = {"simplescaling/openaimath": None}
    name_hints = ("math", "openaimath")

    def split(self, text):
        return split_at_conclusion(text)

    def extract(self, answer):
        start = answer.rfind("\\boxed{")
        return None if start < 0 else _balanced_braces(answer, start + len("\\boxed"))

    def matches(self, prediction, gold):
        from math_verify import parse, verify

        return bool(verify(parse(f"${gold}$"), parse(f"${prediction}$")))

    def question(self, raw, where):
        question = string_field(raw, "problem" if "problem" in raw else "question", where)
        solution = raw.get("solution")
        if "answer" in raw:
            return question, string_field(raw, "answer", where), solution
        gold = self.extract(string_field(raw, "solution", where))
        if gold is None:
            raise RecordError(f"{where}: no field 'answer' and field 'solution' has no \\boxed{{}} answer")
        return question, gold, solution
