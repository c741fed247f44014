"""Launchers: the dry run prints exactly the commands a real launch runs (checked against stand-in gcloud, git and
sbatch executables that log their arguments), a failed step stops the launch, and the SLURM script is complete."""

import os
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

FLAGFILE = "experiments/paper_gsm8k/pipeline.flags"
TPU = ["launch/tpu_vm.py", "--name=run1", "--zone=us-west4-a", f"--flagfile_to_run={FLAGFILE}",
       "--accelerator_type=v5litepod-16", "--project=lab", "--collect_to={out}"]


def launch(args, path_dir=None, cwd=ROOT):
    env = dict(os.environ)
    if path_dir is not None:
        env["PATH"] = f"{path_dir}:{env['PATH']}"
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def stand_ins(directory, names, failing=""):
    """Executables that append their argv (shell-quoted) to calls.log; the one whose args contain `failing` fails."""
    log = directory / "calls.log"
    for name in names:
        script = directory / name
        script.write_text(f"""#!{sys.executable}
import shlex, sys
with open({str(log)!r}, "a") as f:
    f.write(shlex.join([{name!r}, *sys.argv[1:]]) + "\\n")
sys.exit(1 if {failing!r} and {failing!r} in sys.argv[1:] else 0)
""")
        script.chmod(0o755)
    return log


def test_tpu_dry_run_lists_the_whole_launch(tmp_path):
    result = launch([a.format(out=tmp_path / "collected") for a in TPU] + ["--dry_run"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "git archive --format=tar.gz --output=/tmp/jaxprune-src.tar.gz HEAD"
    assert lines[1] == ("gcloud compute tpus tpu-vm create run1 --zone=us-west4-a --project=lab "
                        "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite")
    run = shlex.split(lines[3])
    assert run[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in run
    assert run[-1].endswith(f"python3 -m jaxprune.experiments.pipeline --flagfile={FLAGFILE} "
                            "--coordinator_address=auto")
    assert lines[4].endswith(f"run1:jaxprune/outputs {tmp_path / 'collected'} --zone=us-west4-a --project=lab --worker=0")
    assert lines[5] == "gcloud compute tpus tpu-vm delete run1 --zone=us-west4-a --project=lab --quiet"
    kept = launch([a.format(out=tmp_path / "other") for a in TPU] + ["--dry_run", "--keep", "--spot"]).stdout.splitlines()
    assert len(kept) == 5 and kept[1].endswith(" --spot")
    assert not (tmp_path / "collected").exists()
    (tmp_path / "collected").mkdir()
    refused = launch([a.format(out=tmp_path / "collected") for a in TPU] + ["--dry_run"])
    assert refused.returncode != 0 and "exists already" in refused.stderr


def test_tpu_launch_runs_exactly_the_dry_run_commands_and_stops_at_a_failure(tmp_path):
    args = [a.format(out=tmp_path / "collected") for a in TPU]
    expected = launch(args + ["--dry_run"]).stdout.splitlines()
    log = stand_ins(tmp_path, ["gcloud", "git"])
    result = launch(args, path_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    check, *calls = log.read_text().splitlines()
    assert check == f"git cat-file -e HEAD:{FLAGFILE}" and calls == expected

    log.unlink()
    stand_ins(tmp_path, ["gcloud", "git"], failing="ssh")
    failed = launch(args, path_dir=tmp_path)
    assert failed.returncode != 0 and "still up" in failed.stderr
    assert log.read_text().splitlines()[1:] == expected[:4]  # no collection, no delete after the failed run


def test_slurm_script_and_submission(tmp_path):
    args = ["launch/slurm.py", "--name=gsm8k", "--nodes=2", "--gpus_per_node=4", "--module=pipeline",
            f"--flagfile_to_run={FLAGFILE}", "--partition=gpu"]
    dry = launch(args + ["--dry_run"])
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    for option in ("--job-name=gsm8k", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu"):
        assert f"#SBATCH {option}" in lines
    assert f"srun --kill-on-bad-exit=1 python -m jaxprune.experiments.pipeline --flagfile={FLAGFILE} " \
           "--coordinator_address=auto" in lines
    assert lines[-1] == "sbatch outputs/slurm/gsm8k.sbatch"

    checkout = tmp_path / "checkout"
    (checkout / "experiments" / "paper_gsm8k").mkdir(parents=True)
    (checkout / FLAGFILE).write_text("")
    log = stand_ins(tmp_path, ["sbatch"])
    result = launch([str(ROOT / args[0]), *args[1:]], path_dir=tmp_path, cwd=checkout)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["sbatch outputs/slurm/gsm8k.sbatch"]
    script = (checkout / "outputs" / "slurm" / "gsm8k.sbatch").read_text()
    assert script.startswith("#!/bin/bash\n") and f"cd {checkout}\n" in script


@pytest.mark.parametrize("launcher, message", [(["launch/tpu_vm.py", "--zone=z"], "is not committed"),
                                               (["launch/slurm.py"], "does not exist")])
def test_a_missing_flagfile_is_refused(launcher, message):
    result = launch([*launcher, "--name=x", "--flagfile_to_run=experiments/none.flags", "--dry_run"])
    assert result.returncode != 0 and f"experiments/none.flags {message}" in result.stderr
