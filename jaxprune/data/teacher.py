"""Teacher chains by rejection sampling: up to n samples per question, keep the first whose answer is correct.

Attempts flow through the decoder's rows (continuous batching): when an attempt finishes wrong and the question
has attempts left, its next attempt is queued first; a question is done when an attempt is correct or all n are
spent. Attempt k of the question at dataset index i always samples from the random stream (seed, i, k), so results
do not depend on batching, on the number of processes or on where a killed run resumed. Each finished question is appended at once
(see `process_parts`), wrong ones included: the file of all outcomes is both the resume log and the accuracy record.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from typing import Any, Sequence

from absl import logging
from tqdm import tqdm

from jaxprune import files
from jaxprune.data.answers import extract_answer, is_correct, split_reasoning_answer, split_thinking
from jaxprune.data.process_parts import ProcessParts
from jaxprune.data.prompts import generation_prompt
from jaxprune.data.records import RecordError, read_jsonl
from jaxprune.generation import Decoder, Job, SamplingConfig


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """`samples` attempts per question at most (1 with temperature 0 for test splits); `batch_size` rows decoding
    at once."""

    sampling: SamplingConfig
    samples: int = 10
    batch_size: int = 16
    seed: int = 0
    teacher: str = ""  # recorded in every chain

    def __post_init__(self):
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.sampling.temperature == 0 and self.samples > 1:
            raise ValueError("greedy decoding (temperature 0) gives the same sample every time; use samples=1")


def end_of_turn_ids(model, tokenizer) -> tuple[int, ...]:
    """Tokens that end an assistant turn: the model's and tokenizer's EOS ids (Llama 3 lists several)."""
    ids = {*model.config.eos_token_ids, tokenizer.eos_token_id}
    return tuple(sorted(i for i in ids if i is not None))


def judge(question: dict[str, Any], text: str, tokenizer) -> dict[str, Any]:
    """The reasoning / answer split of one completion, its extracted answer, correctness and token counts."""
    split = split_reasoning_answer(text, question["dataset"])
    reasoning, answer = split if split else (text, "")
    prediction = extract_answer(answer, question["dataset"]) if split else None
    count = lambda s: len(tokenizer(s, add_special_tokens=False).input_ids) if s else 0  # noqa: E731
    return {"reasoning": reasoning, "answer": answer, "thinking": split_thinking(text) is not None,
            "prediction": prediction,
            "is_correct": is_correct(prediction, question["gold"], question["dataset"]),
            "question_tokens": count(question["question"]), "reasoning_tokens": count(reasoning),
            "answer_tokens": count(answer)}


def sample_chains(questions: Sequence[dict[str, Any]], model, tokenizer, config: TeacherConfig, system: str | None,
                  output: str, *, mesh=None) -> dict[str, int]:
    """Rejection-samples a chain for every question into `output` (resuming it); returns outcome counts."""
    parts = ProcessParts(output)
    counts: collections.Counter = collections.Counter()
    _check_same_settings(parts.path, config, system)
    with parts.appender() as appender:
        mine = parts.mine(list(enumerate(questions)))
        todo = [(i, q) for i, q in mine if str(q["id"]) not in appender.done_ids]
        counts["already done"] = len(mine) - len(todo)
        if todo:
            _rejection_sample(todo, model, tokenizer, config, system, appender, counts, mesh)
    parts.merge([str(q["id"]) for q in questions])
    logging.info("teacher chains: %s", dict(counts))
    return dict(counts)


_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
REFERENCE_TEACHER = "reference solution"


def reference_chains(questions: Sequence[dict[str, Any]], tokenizer, system: str | None) -> list[dict[str, Any]]:
    """Chains from the questions' own worked solutions instead of a teacher's samples (GSM8K's `<<48/2=24>>`
    calculator annotations removed), for when a small model's own chains are rarely correct. Records carry the
    fields the filters, the pruner and the student read, `attempts` 0 and `teacher` "reference solution"; a
    solution without the dataset's answer marker (MATH solutions often lack "Thus, the ...") is judged wrong."""
    records = []
    for question in questions:
        if not question.get("solution"):
            raise RecordError(f"question {question['id']!r}: field 'solution' is missing; reference chains need "
                              "worked solutions (GSM8K train, MATH, generated:N)")
        text = _CALCULATOR_ANNOTATION.sub("", question["solution"]).strip()
        verdict = judge(question, text, tokenizer)
        record = {key: value for key, value in question.items() if key != "solution"}
        record.update(completion=text, **verdict, attempts=0, completion_tokens=verdict["reasoning_tokens"]
                      + verdict["answer_tokens"], stopped="end_of_turn", teacher=REFERENCE_TEACHER, system=system)
        records.append(record)
    return records


def _settings(config: TeacherConfig, system: str | None) -> dict[str, Any]:
    return {"teacher": config.teacher, "system": system, "temperature": config.sampling.temperature,
            "top_p": config.sampling.top_p, "max_new_tokens": config.sampling.max_new_tokens,
            "samples": config.samples, "seed": config.seed}


def _check_same_settings(path: str, config: TeacherConfig, system: str | None) -> None:
    """Refuses to resume a file written with other settings (it would mix two experiments)."""
    if not files.exists(path):  # local or gs://
        return
    expected = _settings(config, system)
    for number, record in read_jsonl(path):
        for field, value in expected.items():
            if record.get(field) != value:
                raise RecordError(f"{path}:{number}: field '{field}'={record.get(field)!r} differs from this run's "
                                  f"{value!r}; use another --output or the same settings")
        return  # every record of a file comes from one run


def _rejection_sample(todo, model, tokenizer, config: TeacherConfig, system, appender, counts, mesh) -> None:
    stop_ids = end_of_turn_ids(model, tokenizer)
    sampling = dataclasses.replace(config.sampling, stop_token_ids=stop_ids)
    prompts = {i: generation_prompt(tokenizer, q["question"], system) for i, q in todo}
    # Retries go first, so that a question's attempts follow each other and its record is written early.
    queue = collections.deque(Job((i, q, 0), prompts[i], (i, 0)) for i, q in todo)
    decoder = Decoder(model, sampling, batch_size=config.batch_size, seed=config.seed, mesh=mesh,
                      max_prompt_length=max(map(len, prompts.values())), pad_id=tokenizer.pad_token_id or 0)
    progress = tqdm(total=len(todo), desc="teacher chains", unit="question", mininterval=1.0)
    generated, started = 0, time.perf_counter()
    for job, tokens in decoder.run(lambda: queue.popleft() if queue else None):
        index, question, attempt = job.key
        generated += len(tokens)
        finished = bool(tokens) and tokens[-1] in stop_ids
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        verdict = judge(question, text, tokenizer)
        if not verdict["is_correct"] and attempt + 1 < config.samples:
            queue.appendleft(Job((index, question, attempt + 1), prompts[index], (index, attempt + 1)))
            continue
        appender.append(_chain_record(question, system, text, verdict, attempt + 1, len(prompts[index]),
                                      len(tokens), finished, config))
        counts["correct" if verdict["is_correct"] else "no correct sample"] += 1
        progress.update()
        progress.set_postfix(tokens_per_s=f"{generated / (time.perf_counter() - started):.0f}",
                             correct=counts["correct"])
    progress.close()


def _chain_record(question: dict[str, Any], system: str | None, text: str, verdict: dict[str, Any], attempts: int,
                  prompt_tokens: int, completion_tokens: int, finished: bool, config: TeacherConfig) -> dict[str, Any]:
    record = dict(question)
    record.update(completion=text, **verdict, attempts=attempts, prompt_tokens=prompt_tokens,
                  completion_tokens=completion_tokens, stopped="end_of_turn" if finished else "max_new_tokens",
                  **_settings(config, system))
    return record
