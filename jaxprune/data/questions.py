"""Question sources in one record schema: GSM8K, MATH, MMLU-Pro (hub id or local file), CHAMP, generated problems.

A question record has `id` (string, unique), `dataset` (the answer format it is checked with: `gsm8k`, `math` or
`mmlu_pro`), `question` (the full user text; MMLU-Pro options are appended as "A. ..." lines), `gold` (the final
answer) and, when the source has one, `solution` (a worked reference solution).

`source` may be:
* a local `.jsonl` file (read line by line, so errors name the line), a `.parquet` file, or a directory holding
  `{split}.jsonl` / `{split}.parquet`;
* a hub id such as `openai/gsm8k`, `simplescaling/openaimath` or `TIGER-Lab/MMLU-Pro` (through `datasets`);
* `champ` (the `champ-dataset` package: 270 competition problems, checked as MATH);
* `generated:N`, N seeded GSM8K-style problems from `jaxprune.data.synthetic`.
Raw records are mapped by dataset: GSM8K `question`/`answer` (gold after `####`), MATH `problem`/`solution`/`answer`
(gold from the last `\\boxed{}` when there is no `answer`), MMLU-Pro `question`/`options`/`answer`. A record that
already has `question` and `gold` is taken as it is.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from jaxprune import files
from jaxprune.data.records import RecordError, read_rows
from jaxprune.tasks import TASKS, get_task
from jaxprune.tasks.base import string_field

QUESTION_FIELDS = ("id", "dataset", "question", "gold")


def hub_datasets() -> dict[str, tuple[str, str | None]]:
    """Hub dataset id -> (task, subset), from the registered tasks' own hub ids."""
    return {hub_id: (name, subset) for name, task in TASKS.items() for hub_id, subset in task.hub_ids.items()}


def infer_dataset(source: str) -> str | None:
    """The answer format a source implies, when its name tells."""
    if source == "champ":
        return "math"
    if source.startswith("generated:"):
        return "gsm8k"
    hub = hub_datasets()
    if source in hub:
        return hub[source][0]
    name = os.path.basename(os.path.normpath(source)).lower().replace("-", "_")
    return next((task for task in sorted(TASKS) if any(hint in name for hint in TASKS[task].name_hints)), None)


def _normalise(raw: dict[str, Any], dataset: str, default_id: str, where: str) -> dict[str, Any]:
    """One raw record of `dataset` as a question record (one that has `question` and `gold` is taken as it is)."""
    record_id = str(raw.get("id", raw.get("unique_id", raw.get("question_id", default_id))))
    if "gold" in raw:
        question, gold = string_field(raw, "question", where), string_field(raw, "gold", where)
        solution = raw.get("solution")
    else:
        question, gold, solution = get_task(dataset).question(raw, where)
    record = {"id": record_id, "dataset": dataset, "question": question, "gold": gold}
    if solution:
        record["solution"] = str(solution)
    return record


def _hub_rows(source: str, split: str, subset: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    subset = subset or hub_datasets().get(source, (None, None))[1]
    for number, raw in enumerate(datasets.load_dataset(source, subset, split=split), start=1):
        yield f"{source}[{split}]:row {number}", raw


def _rows(source: str, split: str, subset: str | None) -> tuple[str, Iterator[tuple[str, dict[str, Any]]]]:
    """A name for default ids (the split, or a file's stem) and the `(where, raw record)` rows."""
    if files.is_dir(source):  # a local or gs:// folder
        candidates = [os.path.join(source, f"{split}{ext}") for ext in (".jsonl", ".parquet")]
        path = next((c for c in candidates if files.is_file(c)), None)
        if path is None:
            raise RecordError(f"{source}: no {split}.jsonl or {split}.parquet in this directory")
        return split, read_rows(path)
    if files.exists(source) or source.endswith((".jsonl", ".json", ".parquet")):
        return os.path.splitext(os.path.basename(source))[0], read_rows(source)
    return split, _hub_rows(source, split, subset)


def load_questions(source: str, *, dataset: str | None = None, split: str = "test", subset: str | None = None,
                   limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Reads and checks every question of `source` (the first `limit`) before any model work; ids must be unique."""
    dataset = dataset or infer_dataset(source)
    if dataset not in TASKS:
        raise ValueError(f"cannot tell the answer format of {source!r}; pass dataset= one of "
                         f"{', '.join(sorted(TASKS))}")
    if source.startswith("generated:"):
        from jaxprune.data.synthetic import generate_problems

        count = source.split(":", 1)[1]
        if not count.isdigit():
            raise ValueError(f"{source!r}: expected generated:<number of problems>")
        questions = generate_problems(int(count), seed=seed)
    elif source == "champ":
        questions = _champ_questions()
    else:
        name, rows = _rows(source, split, subset)
        questions = []
        for index, (where, raw) in enumerate(rows):
            if limit is not None and index >= limit:
                break
            questions.append((where, _normalise(raw, dataset, f"{dataset}-{name}-{index}", where)))
        seen: dict[str, str] = {}
        for where, record in questions:
            if record["id"] in seen:
                raise RecordError(f"{where}: field 'id'={record['id']!r} repeats {seen[record['id']]}")
            seen[record["id"]] = where
        questions = [record for _, record in questions]
    return questions[:limit]


def _champ_questions() -> list[dict[str, Any]]:
    import champ_dataset

    problems = champ_dataset.load("v0").problems.values()
    return [{"id": f"champ-{p.identifier}", "dataset": "math", "question": p.text, "gold": p.answer,
             "solution": "\n".join(step.text for step in p.solution.steps)} for p in problems]
