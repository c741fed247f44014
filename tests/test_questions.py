"""Question sources: GSM8K / MATH / MMLU-Pro records from JSONL, parquet and directories, CHAMP, generated problems,
and malformed records named by file, line and field."""

import json
import os
import re

import pytest

from jaxprune.data.answers import extract_answer, is_correct, split_reasoning_answer
from jaxprune.data.questions import infer_dataset, load_questions
from jaxprune.data.records import RecordError
from jaxprune.data.synthetic import generate_problems

GSM8K_DIR = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "gsm8k")  # in the repository


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_gsm8k_directory_gives_questions_with_the_gold_after_hashes():
    questions = load_questions(GSM8K_DIR, split="test", limit=3)
    with open(f"{GSM8K_DIR}/test.jsonl") as f:
        raw = [json.loads(next(f)) for _ in range(3)]
    assert [q["id"] for q in questions] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    for question, line in zip(questions, raw):
        assert question["dataset"] == "gsm8k" and question["question"] == line["question"]
        assert question["gold"] == line["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert question["solution"] == line["answer"]


def test_math_and_mmlu_pro_records_are_mapped(tmp_path):
    math = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Compute 1/2 + 1/4.", "solution": "Add: $\\boxed{\\frac{3}{4}}$.", "unique_id": "m1"},
        {"problem": "What is 2+2?", "solution": "It is 4.", "answer": "4"}])
    assert [(q["id"], q["gold"]) for q in load_questions(math)] == [("m1", "\\frac{3}{4}"), ("math-math-1", "4")]
    mmlu = write_jsonl(tmp_path / "mmlu_pro.jsonl", [
        {"question_id": 7, "question": "Which is a noble gas?", "options": ["Iron", "Neon", "Salt"], "answer": "B",
         "cot_content": ""}])
    [question] = load_questions(mmlu)
    assert question == {"id": "7", "dataset": "mmlu_pro", "gold": "B",
                        "question": "Which is a noble gas?\n\nOptions:\nA. Iron\nB. Neon\nC. Salt"}


def test_parquet_file_reads_like_jsonl(tmp_path):
    datasets = pytest.importorskip("datasets")
    records = [{"question": "One plus one?", "answer": "1 + 1 = 2\n#### 2"},
               {"question": "Two times three?", "answer": "2 * 3 = 6\n#### 6"}]
    parquet = tmp_path / "gsm8k_small.parquet"
    datasets.Dataset.from_list(records).to_parquet(str(parquet))
    jsonl = write_jsonl(tmp_path / "gsm8k_small.jsonl", records)
    assert load_questions(str(parquet)) == load_questions(jsonl)


@pytest.mark.parametrize("record, message", [
    ({"answer": "#### 3"}, ":2: missing field 'question'"),
    ({"question": "Q?", "answer": "three"}, ":2: field 'answer' has no '#### <number>' line"),
    ({"question": ["Q?"], "answer": "#### 3"}, ":2: field 'question' must be a string, got list"),
])
def test_a_malformed_gsm8k_record_is_named_by_file_line_and_field(tmp_path, record, message):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "Fine?", "answer": "#### 1"}, record])
    with pytest.raises(RecordError, match=re.escape(f"{path}{message}")):
        load_questions(path)


def test_malformed_mmlu_pro_and_duplicate_ids_are_named(tmp_path):
    path = write_jsonl(tmp_path / "mmlu_pro.jsonl", [{"question": "Q?", "options": ["x", "y"], "answer": "C"}])
    with pytest.raises(RecordError, match=re.escape(f"{path}:1: field 'answer'='C' is not one of the option")):
        load_questions(path)
    path = write_jsonl(tmp_path / "gsm8k.jsonl", [{"id": 1, "question": "Q?", "answer": "#### 1"},
                                                  {"id": "1", "question": "R?", "answer": "#### 2"}])
    with pytest.raises(RecordError, match=re.escape(f"{path}:2: field 'id'='1' repeats {path}:1")):
        load_questions(path)


def test_unknown_answer_format_is_refused_before_reading():
    assert infer_dataset("/data/questions.jsonl") is None
    with pytest.raises(ValueError, match="cannot tell the answer format"):
        load_questions("/data/questions.jsonl")


def test_champ_problems_load_as_math():
    questions = load_questions("champ")
    assert len(questions) == 270 and len({q["id"] for q in questions}) == 270
    assert all(q["dataset"] == "math" and q["question"] and q["gold"] for q in questions)


def test_generated_problems_are_seeded_prefix_stable_and_varied():
    problems = generate_problems(50, seed=3)
    assert problems == generate_problems(50, seed=3)
    assert problems[:20] == generate_problems(20, seed=3)
    assert problems != generate_problems(50, seed=4)
    assert len({p["question"].split(" ")[1] for p in problems}) >= 5  # several templates, not one
    assert load_questions("generated:50", seed=3) == problems


def test_generated_solutions_are_right_step_by_step_and_pass_the_answer_checker():
    equation = re.compile(r"(\d+) ([-+*/]) (\d+)(?: / 100)? = \$?(\d+)")
    for problem in generate_problems(200, seed=0):
        steps = problem["solution"].splitlines()[:-1]
        for step in steps:
            for a, op, b, result in equation.findall(step):
                value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}.get(op)
                if "/ 100" in step:
                    value = int(a) * int(b) // 100
                assert value == int(result), f"{problem['id']}: {step}"
        assert equation.findall(steps[-1])[-1][3] == problem["gold"]
        reasoning, answer = split_reasoning_answer(problem["solution"], "gsm8k")
        assert is_correct(extract_answer(answer, "gsm8k"), problem["gold"], "gsm8k")
