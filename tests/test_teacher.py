"""Teacher chains: rejection sampling keeps the first correct attempt, runs are seeded, a killed run resumes, filters."""

import json

import pytest
from conftest import cli, kill_after_lines, run_processes

from jaxprune.checkpoints import load_model
from jaxprune.data.filters import filter_chains
from jaxprune.data.prompts import SYSTEM_PROMPTS, generation_prompt
from jaxprune.data.records import RecordError
from jaxprune.data.teacher import TeacherConfig, end_of_turn_ids, judge, sample_chains
from jaxprune.generation import SamplingConfig, generate

EASY = [("Tom has 3 apples and buys 5 more. How many apples does Tom have now?", "8"),
        ("Each ticket costs $6. How much do 5 tickets cost?", "30"),
        ("A farmer has 7 cows and 9 sheep. How many animals does he have in total?", "16"),
        ("Sam had 15 marbles and found 7 more. How many marbles does Sam have now?", "22")]
QUESTIONS = [{"id": f"easy-{i}", "dataset": "gsm8k", "question": q, "gold": g} for i, (q, g) in enumerate(EASY)]
GENERATE = "jaxprune.experiments.generate"


def read(path):
    return [json.loads(line) for line in open(path)]


def test_rejection_sampling_keeps_the_first_correct_attempt(tmp_path, smollm2):
    """Reference: every attempt of every question generated unconditionally in one batch, then a plain loop picks
    the first correct one (or the last attempt when none is)."""
    model, tokenizer = smollm2
    system, samples, batch = SYSTEM_PROMPTS["gsm8k_hash"], 3, len(QUESTIONS) * 3
    config = TeacherConfig(SamplingConfig(max_new_tokens=56, temperature=0.5), samples=samples, batch_size=batch,
                           seed=2, teacher="smollm2")
    counts = sample_chains(QUESTIONS, model, tokenizer, config, system, str(tmp_path / "all.jsonl"))

    prompts = [generation_prompt(tokenizer, q["question"], system) for q in QUESTIONS for _ in range(samples)]
    streams = [[i, k] for i in range(len(QUESTIONS)) for k in range(samples)]
    sampling = SamplingConfig(max_new_tokens=56, temperature=0.5, stop_token_ids=end_of_turn_ids(model, tokenizer))
    every = generate(model, prompts, sampling, seed=2, stream_ids=streams, batch_size=batch)
    texts = [tokenizer.decode(tokens, skip_special_tokens=True) for tokens in every]
    verdicts = [judge(QUESTIONS[i], text, tokenizer)["is_correct"] for (i, _), text in zip(streams, texts)]
    expected = {}
    for i, question in enumerate(QUESTIONS):
        mine = verdicts[i * samples:(i + 1) * samples]
        first = mine.index(True) if True in mine else samples - 1
        expected[question["id"]] = (first + 1, texts[i * samples + first], mine[first])
    records = {r["id"]: r for r in read(tmp_path / "all.jsonl")}
    assert {key: (r["attempts"], r["completion"], r["is_correct"]) for key, r in records.items()} == expected
    assert any(a > 1 and ok for a, _, ok in expected.values()), "no question needed a retry: the test is too easy"
    assert counts["correct"] == sum(ok for _, _, ok in expected.values())


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir)


def test_sampling_is_deterministic_for_a_seed_whatever_the_batch(tmp_path, tiny):
    def run(name, seed, batch_size):
        config = TeacherConfig(SamplingConfig(max_new_tokens=12, temperature=1.0), samples=2, batch_size=batch_size,
                               seed=seed)
        sample_chains(QUESTIONS, *tiny, config, "Be brief.", str(tmp_path / name))
        return {r["id"]: r["completion"] for r in read(tmp_path / name)}

    first = run("a.jsonl", seed=1, batch_size=3)
    assert run("b.jsonl", seed=1, batch_size=3) == first
    assert run("c.jsonl", seed=1, batch_size=8) == first
    assert run("d.jsonl", seed=2, batch_size=3) != first


def test_resuming_with_other_settings_is_refused(tmp_path, tiny):
    config = TeacherConfig(SamplingConfig(max_new_tokens=4, temperature=1.0), samples=1, seed=1)
    sample_chains(QUESTIONS[:1], *tiny, config, None, str(tmp_path / "all.jsonl"))
    other = TeacherConfig(SamplingConfig(max_new_tokens=4, temperature=1.0), samples=1, seed=2)
    with pytest.raises(RecordError, match=f"{tmp_path / 'all.jsonl'}:1: field 'seed'=1 differs from this run's 2"):
        sample_chains(QUESTIONS, *tiny, other, None, str(tmp_path / "all.jsonl"))


def generate_cli(*args):
    return cli(GENERATE, *args)


def test_killed_run_resumes_without_duplicates_or_gaps(tmp_path, tiny_dir):
    args = [f"--model={tiny_dir}", "--source=generated:12", "--samples=2", "--max_new_tokens=24", "--batch_size=2"]
    reference = generate_cli(*args, f"--output={tmp_path / 'reference.jsonl'}")
    assert reference.returncode == 0, reference.stderr

    killed = tmp_path / "killed.all.jsonl"
    written = kill_after_lines(GENERATE, [*args, f"--output={tmp_path / 'killed.jsonl'}"], killed, lines=3)
    assert 3 <= written < 12, "the run must be killed mid-way"
    resumed = generate_cli(*args, f"--output={tmp_path / 'killed.jsonl'}")
    assert resumed.returncode == 0, resumed.stderr
    ids = [r["id"] for r in read(killed)]
    assert sorted(ids) == sorted(f"generated-0-{i}" for i in range(12))  # no duplicates, no gaps
    by_id = {r["id"]: r for r in read(tmp_path / "reference.all.jsonl")}
    assert all(r == by_id[r["id"]] for r in read(killed))


def test_two_processes_split_the_questions_and_process_zero_merges(tmp_path, tiny_dir):
    args = [f"--model={tiny_dir}", "--source=generated:7", "--samples=2", "--max_new_tokens=12", "--batch_size=2",
            "--temperature=1.0", "--min_reasoning_chars=0"]
    single = generate_cli(*args, f"--output={tmp_path / 'single.jsonl'}")
    assert single.returncode == 0, single.stderr
    runs = run_processes(GENERATE, [*args, f"--output={tmp_path / 'multi.jsonl'}"], count=2)
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    parts = [read(tmp_path / f"multi.all.jsonl.part-0000{i}-of-00002") for i in range(2)]
    assert [len(part) for part in parts] == [4, 3]  # questions 0, 2, 4, 6 and 1, 3, 5
    merged = read(tmp_path / "multi.all.jsonl")
    assert [r["id"] for r in merged] == [f"generated-0-{i}" for i in range(7)]  # in question order
    assert merged == sorted(read(tmp_path / "single.all.jsonl"), key=lambda r: int(r["id"].rsplit("-", 1)[1]))


def test_cli_names_a_malformed_question_before_loading_the_model(tmp_path):
    source = tmp_path / "gsm8k.jsonl"
    source.write_text('{"question": "Fine?", "answer": "#### 1"}\n{"question": "Bad?", "answer": "no answer"}\n')
    result = generate_cli(f"--source={source}", f"--output={tmp_path / 'o.jsonl'}", "--model=/no/such/model")
    assert result.returncode != 0
    assert f"{source}:2: field 'answer' has no '#### <number>' line" in result.stderr
    assert "/no/such/model" not in result.stderr


def chain(i, correct=True, reasoning="x" * 120, question_tokens=10, reasoning_tokens=50, answer_tokens=5):
    return {"id": str(i), "dataset": "gsm8k", "is_correct": correct, "reasoning": reasoning,
            "question_tokens": question_tokens, "reasoning_tokens": reasoning_tokens, "answer_tokens": answer_tokens}


def test_filters_drop_wrong_short_and_overlong_chains_and_count_them():
    records = [chain(0, correct=False), chain(1, reasoning="short"), chain(2, correct=False, reasoning="short")]
    records += [chain(10 + n, reasoning_tokens=n) for n in range(1, 101)]  # reasoning lengths 1..100
    kept, counts = filter_chains(records, length_percentile=90)
    # the 90th percentile of 1..100 (linear interpolation) is 90.1: lengths 91..100 go
    assert [r["reasoning_tokens"] for r in kept] == list(range(1, 91))
    assert counts == {"dropped: not correct": 2, "dropped: reasoning under 100 characters": 1,
                      "dropped: reasoning above the length percentile": 10, "kept": 90}
    assert filter_chains(records)[1]["kept"] == 99  # GSM8K default: 99th percentile (99.01)
    assert filter_chains(records, length_percentile=100)[1]["kept"] == 100


def test_rows_split_over_eight_devices_give_the_same_chains(tmp_path, tiny):
    from jaxprune.sharding import make_mesh

    config = TeacherConfig(SamplingConfig(max_new_tokens=10, temperature=1.0), samples=2, batch_size=4, seed=3)
    sample_chains(QUESTIONS, *tiny, config, None, str(tmp_path / "one.jsonl"))
    sample_chains(QUESTIONS, *tiny, config, None, str(tmp_path / "eight.jsonl"), mesh=make_mesh({"data": 8}))
    assert sorted(read(tmp_path / "one.jsonl"), key=str) == sorted(read(tmp_path / "eight.jsonl"), key=str)


def test_offline_default_flagfile_runs(tmp_path):
    """experiments/teacher_generated.flags stays valid (cut here to two problems, greedy, eight tokens)."""
    result = generate_cli("--flagfile=experiments/teacher_generated.flags", "--source=generated:2", "--samples=1",
                          "--temperature=0", "--max_new_tokens=8", f"--output={tmp_path / 'chains.jsonl'}")
    assert result.returncode == 0, result.stderr
    assert sorted(r["id"] for r in read(tmp_path / "chains.all.jsonl")) == ["generated-0-0", "generated-0-1"]
    assert "accuracy: " in result.stdout
    summary = json.loads((tmp_path / "chains.summary.json").read_text())
    assert summary["questions"] == 2 and summary["source"] == "generated:2" and "filter_counts" in summary


def test_evaluate_cli_is_greedy_with_one_answer_per_question(tmp_path, tiny_dir):
    result = cli("jaxprune.experiments.evaluate", f"--model={tiny_dir}", "--source=generated:3",
                 "--max_new_tokens=6", f"--output={tmp_path / 'eval.jsonl'}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "eval.summary.json").read_text())
    assert (summary["questions"], summary["samples"], summary["temperature"]) == (3, 1, 0.0)
    assert all(r["attempts"] == 1 for r in read(tmp_path / "eval.all.jsonl"))


def test_reference_chains_are_the_worked_solutions_without_calculator_annotations(tmp_path, smollm2):
    (tmp_path / "train.jsonl").write_text(json.dumps({
        "question": "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"})
        + "\n")
    result = cli(GENERATE, f"--source={tmp_path}", "--dataset=gsm8k", "--split=train", "--from_solutions",
                 "--prompt=gsm8k_hash",
                 "--min_reasoning_chars=0", f"--output={tmp_path / 'chains.jsonl'}")
    assert result.returncode == 0, result.stderr[-3000:]
    [chain] = read(tmp_path / "chains.jsonl")
    assert chain["reasoning"] == "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n"
    assert chain["answer"] == "#### 72" and chain["is_correct"] and chain["teacher"] == "reference solution"
    assert chain["system"] == SYSTEM_PROMPTS["gsm8k_hash"] and "solution" not in chain
    assert chain["reasoning_tokens"] == len(smollm2[1](chain["reasoning"], add_special_tokens=False).input_ids)

    (tmp_path / "plain.jsonl").write_text(json.dumps({"id": "q1", "question": "1 + 1?", "gold": "2"}) + "\n")
    result = cli(GENERATE, f"--source={tmp_path / 'plain.jsonl'}", "--dataset=gsm8k", "--from_solutions",
                 f"--output={tmp_path / 'none.jsonl'}")
    assert result.returncode != 0 and "question 'q1': field 'solution' is missing" in result.stderr
