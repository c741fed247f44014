"""Task formats in their registry: a new dataset is one `Task` subclass, and every stage that reads answers,
questions, prompts or length filters uses it without another change."""

import json

import pytest

from jaxprune.data.answers import DATASETS, extract_answer, is_correct, split_reasoning_answer
from jaxprune.data.filters import filter_chains
from jaxprune.data.prompts import SYSTEM_PROMPTS
from jaxprune.data.questions import hub_datasets, infer_dataset, load_questions
from jaxprune.data.records import RecordError
from jaxprune.tasks import TASKS, Task, register


@pytest.fixture
def countdown():
    """A made-up format: the answer after "ANSWER:" is a word, right when it is one of the gold's `|`-separated
    words in any case; raw records hold `puzzle` and `target`; chains are filtered at the 50th length percentile."""

    @register
    class Countdown(Task):
        name = "countdown"
        system_prompts = {"countdown": "Think, then write ANSWER: <word>."}
        length_percentile = 50.0
        hub_ids = {"lab/countdown": "hard"}
        name_hints = ("countdown",)

        def split(self, text):
            index = text.rfind("ANSWER:")
            return None if index < 0 else (text[:index], text[index:])

        def extract(self, answer):
            return answer.split("ANSWER:")[-1].strip() or None if "ANSWER:" in answer else None

        def matches(self, prediction, gold):
            return prediction.lower() in gold.lower().split("|")

        def question(self, raw, where):
            if "target" not in raw:
                raise RecordError(f"{where}: missing field 'target'")
            return raw["puzzle"], raw["target"], None

    yield TASKS["countdown"]
    del TASKS["countdown"]


def test_a_new_task_format_is_one_class_that_every_reader_uses(countdown, tmp_path):
    assert countdown.system_prompt == "Think, then write ANSWER: <word>."
    assert split_reasoning_answer("I try it.\nANSWER: Fox", "countdown") == ("I try it.\n", "ANSWER: Fox")
    assert split_reasoning_answer("<think>hm</think>ANSWER: Fox", "countdown") == ("hm", "ANSWER: Fox")
    assert extract_answer("ANSWER: Fox", "countdown") == "Fox" and is_correct("Fox", "wolf|fox", "countdown")
    assert not is_correct(None, "wolf|fox", "countdown") and not is_correct("dog", "wolf|fox", "countdown")
    path = tmp_path / "countdown_test.jsonl"
    path.write_text(json.dumps({"puzzle": "Three letters, a dog's cousin", "target": "fox"}) + "\n"
                    + json.dumps({"puzzle": "no target"}) + "\n")
    assert infer_dataset(str(path)) == "countdown" and hub_datasets()["lab/countdown"] == ("countdown", "hard")
    with pytest.raises(RecordError, match=f"{path}:2: missing field 'target'"):
        load_questions(str(path))
    path.write_text(path.read_text().splitlines()[0] + "\n")
    [question] = load_questions(str(path))
    assert (question["dataset"], question["question"], question["gold"]) == ("countdown",
                                                                              "Three letters, a dog's cousin", "fox")
    records = [{"is_correct": True, "reasoning": "x" * 200, "dataset": "countdown", "question_tokens": 5,
                "reasoning_tokens": length, "answer_tokens": 3} for length in (10, 20, 30, 40)]
    kept, _ = filter_chains(records)
    assert [r["reasoning_tokens"] for r in kept] == [10, 20]  # the task's own 50th percentile


def test_the_shipped_formats_are_registered_with_their_prompts_hub_ids_and_percentiles():
    assert DATASETS == ("gsm8k", "math", "mmlu_pro")
    assert {name: task.length_percentile for name, task in TASKS.items()} == {"gsm8k": 99.0, "math": 90.0,
                                                                               "mmlu_pro": 90.0}
    assert hub_datasets() == {"openai/gsm8k": ("gsm8k", "main"), "simplescaling/openaimath": ("math", None),
                            "TIGER-Lab/MMLU-Pro": ("mmlu_pro", None)}
    assert set(SYSTEM_PROMPTS) == {"gsm8k", "gsm8k_hash", "math", "mmlu_pro"}
    assert "\\boxed{<answer>}" in SYSTEM_PROMPTS["math"] and '{"answer": "<number>"}' in SYSTEM_PROMPTS["gsm8k"]


def test_an_unknown_dataset_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'gsm9k' \\(known: gsm8k, math, mmlu_pro\\)"):
        extract_answer("#### 5", "gsm9k")
