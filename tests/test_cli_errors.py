"""A CLI refusing a user's input says why in one line on stderr and exits with status 2, with no traceback.

Each case is what a new user tries (a malformed line, a missing file, a flag out of range, a PyTorch `.bin` model,
an output folder that cannot exist) and fails before any model loads, so the runs take seconds.
"""

import json
import re
import subprocess
import sys

import pytest
from conftest import ONE_DEVICE, cli

CHAIN = {"id": 1, "question": "What is 2 + 3?", "reasoning": "2 + 3 = 5.", "answer": "5"}
ABSL_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")  # absl's own log lines, e.g. the topology


def _message(result: subprocess.CompletedProcess) -> str:
    """The one line the CLI printed (absl log lines aside); fails unless the run was refused as documented."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and not ABSL_LOG.match(line)]
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr[-3000:])
    return lines[0]


def _jsonl(path, *lines: str):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.fixture
def good(tmp_path):
    return _jsonl(tmp_path / "chains.jsonl", json.dumps(CHAIN))


def test_a_line_that_is_not_json_is_named_by_file_and_line(tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", json.dumps(CHAIN), '{"id": 2, "question": ')
    line = _message(cli("jaxprune.experiments.prune", f"--input={bad}", f"--output={tmp_path / 'out.jsonl'}"))
    assert line.startswith("prune: error: ") and f"{bad}:2: invalid JSON" in line


def test_a_field_of_the_wrong_type_is_named_by_file_line_and_field(tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", json.dumps(CHAIN), json.dumps(dict(CHAIN, id=2, reasoning=5)))
    line = _message(cli("jaxprune.experiments.prune", f"--input={bad}", f"--output={tmp_path / 'out.jsonl'}"))
    assert f"{bad}:2: field 'reasoning' must be a string, got int" in line


def test_a_missing_input_file_is_named(tmp_path):
    missing = tmp_path / "none.jsonl"
    line = _message(cli("jaxprune.experiments.prune", f"--input={missing}", f"--output={tmp_path / 'out.jsonl'}"))
    assert f"{missing}: no such file" in line


def test_a_keep_ratio_out_of_range_names_the_flag(tmp_path, good):
    line = _message(cli("jaxprune.experiments.prune", f"--input={good}", f"--output={tmp_path / 'out.jsonl'}",
                        "--keep_ratio=1.5"))
    assert "--keep_ratio=1.5: keep_ratio must be in [0, 1)" in line


def test_a_pytorch_bin_model_is_refused_by_name(tmp_path, good):
    model = tmp_path / "somedir" / "pytorch_model.bin"
    model.parent.mkdir()
    model.write_bytes(b"\x80\x02pickle")
    line = _message(cli("jaxprune.experiments.prune", f"--input={good}", f"--output={tmp_path / 'out.jsonl'}",
                        f"--model={model}"))
    assert f"{model}:" in line


def test_an_output_folder_that_is_a_file_fails_before_the_model_loads(tmp_path, good):
    plain = tmp_path / "plain"
    plain.write_text("")
    result = cli("jaxprune.experiments.prune", f"--input={good}", f"--output={plain / 'x.jsonl'}")
    assert f"{plain}: is a file, not a folder, so {plain / 'x.jsonl'} cannot be written there" in _message(result)
    assert "distributed.py" not in result.stderr  # refused before the devices (and then the model) were set up


def test_verbosity_1_shows_the_traceback(tmp_path):
    result = cli("jaxprune.experiments.prune", f"--input={tmp_path / 'none.jsonl'}",
                 f"--output={tmp_path / 'out.jsonl'}", "--verbosity=1")
    assert result.returncode not in (0, 2) and "Traceback" in result.stderr and "RecordError" in result.stderr


def test_generate_names_a_malformed_question_record(tmp_path):
    questions = _jsonl(tmp_path / "questions.jsonl", json.dumps({"id": 1, "answer": "#### 5"}))
    line = _message(cli("jaxprune.experiments.generate", f"--source={questions}", "--dataset=gsm8k",
                        f"--output={tmp_path / 'chains.jsonl'}"))
    assert line.startswith("generate: error: ") and f"{questions}:1: missing field 'question'" in line


def test_distill_names_a_chain_that_was_never_pruned(tmp_path, good):
    line = _message(cli("jaxprune.experiments.distill", f"--chains={good}", "--keep_ratio=0.7",
                        f"--output_dir={tmp_path / 'student'}"))
    assert f"{good}:1: field 'reasoning_token_ids' is missing; keep ratio 0.7 needs a pruned chain" in line


def test_analyze_names_a_file_that_is_not_prune_output(tmp_path, good):
    line = _message(cli("jaxprune.experiments.analyze", f"--pruned={good}", f"--output_dir={tmp_path / 'report'}"))
    assert f"{good}:1: field 'reasoning_token_ids' is missing" in line


def test_the_pipeline_names_the_stage_that_refused_its_input_below_that_stages_own_line(tmp_path):
    questions = _jsonl(tmp_path / "questions.jsonl", json.dumps({"id": 1, "answer": "#### 5"}))
    (tmp_path / "chains.flags").write_text(f"--source={questions}\n--dataset=gsm8k\n")
    for name in ("prune", "distill", "evaluate"):
        (tmp_path / f"{name}.flags").write_text("")
    result = cli("jaxprune.experiments.pipeline", f"--work_dir={tmp_path / 'work'}",
                 f"--chain_flags={tmp_path / 'chains.flags'}", *(f"--{name}_flags={tmp_path / name}.flags"
                                                               for name in ("prune", "distill", "evaluate")))
    lines = [line for line in result.stderr.splitlines() if line.strip() and not ABSL_LOG.match(line)]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line.split(": error: ")[0] for line in lines] == ["generate", "pipeline"], lines
    assert f"{questions}:1: missing field 'question'" in lines[0]
    assert "stage generate:chains.flags exited with status 2" in lines[1]


def _guarded_run(error: str) -> subprocess.CompletedProcess:
    code = ("from absl import app\nfrom jaxprune.experiments import cli\nfrom jaxprune.data.records import "
            f"RecordError\ndef main(argv):\n    raise {error}\ncli.run(main)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ONE_DEVICE, timeout=120)


def test_a_project_error_is_one_line_but_a_plain_value_error_is_a_bug_and_keeps_its_traceback():
    assert _message(_guarded_run("RecordError('x.jsonl:3: field \\'id\\' repeats')")).endswith(
        "error: x.jsonl:3: field 'id' repeats (--verbosity=1 shows the traceback)")
    bug = _guarded_run("ValueError('an internal inconsistency')")
    assert bug.returncode == 1 and "Traceback" in bug.stderr
