"""The ahead-of-time compile check: the paper's stages compiled with libtpu for a TPU v5e-8 fit, an oversized setting
does not, the FLOPs XLA counts agree with the cost model, and libtpu stays quiet where no TPU is asked for."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ONE_DEVICE

from jaxprune.experiments.flagfiles import read_flagfile

ROOT = os.path.join(os.path.dirname(__file__), "..")
PAPER = os.path.join(ROOT, "experiments", "paper_gsm8k")
MODULE = "jaxprune.experiments.compile_check"
NO_PLATFORM = {k: v for k, v in ONE_DEVICE.items() if k != "JAX_PLATFORMS"}  # as a user's shell has it

pytest.importorskip("libtpu", reason="the compile check needs the tpu extra")


def compile_check(*args, timeout=1500):
    result = subprocess.run([sys.executable, "-m", MODULE, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=timeout, env=NO_PLATFORM)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, lines


@pytest.mark.parametrize("module, stage", [("generate", "teacher"), ("prune", "prune"), ("distill", "distill")])
def test_the_checks_defaults_are_the_stage_clis_own(module, stage):
    """Flags a flagfile leaves out take the stage CLI's default; the check must assume the same ones."""
    from jaxprune.experiments.compile_check import DEFAULTS

    names = sorted(DEFAULTS[stage])
    code = (f"import json; from absl import flags; import jaxprune.experiments.{module}; "
            f"d = {{n: flags.FLAGS[n].default for n in {names!r}}}; "
            "print(json.dumps({n: ','.join(v) if isinstance(v, list) else str(v) for n, v in d.items()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ONE_DEVICE, check=True)
    assert json.loads(out.stdout) == DEFAULTS[stage]


def test_the_paper_pipeline_compiles_and_fits_a_tpu_v5e_8():
    result, lines = compile_check(f"--pipeline_flags={PAPER}/pipeline.flags", "--topology=v5e:2x4",
                                  "--reasoning_tokens=1500")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line["stage"] for line in lines] == ["teacher", "prune", "distill"]
    for line in lines:
        assert line["devices"] == 8 and line["hbm_bytes_per_device"] == 16 * 2**30
        assert line["fits"] and 0 < line["bytes_per_device"] <= 0.95 * line["hbm_bytes_per_device"]
        for program in line["programs"]:  # the cost model counts what XLA compiled
            assert program["flops_per_device"] == pytest.approx(program["model_flops_per_device"], rel=0.1), program
    assert "could not determine" not in result.stderr  # libtpu's start-up complaints about hosts and chips


def test_a_teacher_with_its_weights_on_every_device_does_not_fit(tmp_path):
    """bfloat16 Llama-3.1-8B whole on each 16 GiB chip, plus the KV cache: XLA:TPU refuses to compile it, and the
    check says so and exits 1 (full fine-tuning with --mesh=data=-1 fails the same way, more slowly)."""
    flagfile = tmp_path / "chains.flags"
    flags = read_flagfile(f"{PAPER}/chains.flags")
    flags.update(mesh="data=-1")
    flagfile.write_text("".join(f"--{name}={value}\n" for name, value in flags.items()))
    result, lines = compile_check("--stage=teacher", f"--flags={flagfile}", "--topology=v5e:2x4")
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(lines) == 1 and not lines[0]["fits"]
    assert lines[0]["bytes_per_device"] > 16 * 2**30
    assert all("RESOURCE_EXHAUSTED" in program["error"] for program in lines[0]["programs"])


def test_a_missing_stage_flagfile_is_named_before_libtpu_loads(tmp_path):
    result, _ = compile_check("--stage=prune", f"--flags={tmp_path / 'none.flags'}")
    assert result.returncode != 0 and "none.flags: no such flagfile" in result.stderr


def test_a_process_that_asks_for_no_tpu_prints_no_libtpu_noise():
    code = "import jaxprune, jax; print(jax.devices()[0].platform)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=NO_PLATFORM)
    assert out.stdout.strip() == "cpu" and out.stderr == ""
