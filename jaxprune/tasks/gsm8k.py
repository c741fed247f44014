"""GSM8K: grade-school word problems; the answer a number.

The answer is the last JSON object `{"answer": ...}` (repaired with `json-repair` when malformed); small models
that write GSM8K's own `#### <number>` line instead are accepted too (the answer is then the first such line, and
what a small model rambles on with after it is dropped). The number is read through thousands separators, currency
signs and trailing units, then checked with `math-verify`. Raw records: `question` and `answer` (the worked
solution, gold after `####`).
"""

from __future__ import annotations

import re

from jaxprune.data.records import RecordError
from jaxprune.tasks.base import Task, first_number, register, string_field

_JSON_ANSWER = re.compile(r'\{\s*"answer"\s*:')
_HASH_ANSWER = re.compile(r"^####[^\n\d]*\d[^\n]*", re.MULTILINE)  # a #### line with a number


@register
class GSM8K(Task):
    name = "gsm8k"
    system_prompts = {
        "gsm8k": ("Solve the math problem step by step. After your reasoning, give the final answer on the last line "
                  'as a JSON object, exactly in this format: {"answer": "<number>"}'),
        # GSM8K's own `#### <number>` line, which small models (SmolLM2-135M) follow where they ignore JSON.
        "gsm8k_hash": "Solve the math problem step by step. Write the final answer on the last line as: #### <number>",
    }
    length_percentile = 99.0
    hub_ids = {"openai/gsm8k": "main"}
    name_hints = ("gsm8k",)

    def split(self, text):
        json_starts = [m.start() for m in _JSON_ANSWER.finditer(text)]
        if json_starts:
            return text[:json_starts[-1]], text[json_starts[-1]:]
        line = _HASH_ANSWER.search(text)
        return (text[:line.start()], line.group(0).rstrip()) if line else None

    def extract(self, answer):
        starts = [m.start() for m in _JSON_ANSWER.finditer(answer)]
        if starts:
            import json_repair

            parsed = json_repair.loads(answer[starts[-1]:])
            value = parsed.get("answer") if isinstance(parsed, dict) else None
            return None if value is None else first_number(str(value))
        line = _HASH_ANSWER.search(answer)
        return first_number(line.group(0)[4:]) if line else None

    def matches(self, prediction, gold):
        from math_verify import parse, verify

        gold = first_number(gold) or gold
        return bool(verify(parse(f"${gold}$"), parse(f"${prediction}$")))

    def question(self, raw, where):
        question, solution = string_field(raw, "question", where), string_field(raw, "answer", where)
        gold = self.extract(solution)
        if gold is None:
            raise RecordError(f"{where}: field 'answer' has no '#### <number>' line")
        return question, gold, solution
