"""The paper pipeline compiled for several TPU topologies (or NVIDIA GPUs): memory per device, fit, and XLA's FLOPs
against the cost model's, as one markdown table (what `benchmarks/RESULTS.md` records).

    python benchmarks/compile_table.py [--topologies=v5e:2x4,v5p:2x2x1,v4:2x2x1,v6e:2x4]
    python benchmarks/compile_table.py --topologies=h100:8 --pipeline_flags=experiments/paper_gsm8k_gpu/pipeline.flags

GPUs need the `cuda12` extra; XLA gives no FLOPs for them (the XLA columns then read "-"), and a program fits within
the share of memory JAX's allocator takes (`usable_fraction`), not the TPU headroom.

Runs `python -m jaxprune.experiments.compile_check` once per topology (each its own process: libtpu holds one
topology's compiler state) and tabulates every program it compiled.
"""

import json
import subprocess
import sys

from absl import app, flags

_TOPOLOGIES = flags.DEFINE_list("topologies", ["v5e:2x4", "v5p:2x2x1", "v4:2x2x1", "v6e:2x4"],
                                 "TPU topologies, or <gpu>:<n> (h100:8).")
_PIPELINE_FLAGS = flags.DEFINE_string("pipeline_flags", "experiments/paper_gsm8k/pipeline.flags",
                                      "The pipeline compiled.")


def _number(value: float, spec: str, known: bool) -> str:
    return format(value, spec) if known else "-"


def main(argv):
    del argv
    from jaxprune.compile_check import HEADROOM

    print("| topology | stage | mesh | program | GiB per device | HBM GiB | fits | XLA TFLOP / device | "
          "model TFLOP / device | model / XLA | compile s |")
    print("| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for topology in _TOPOLOGIES.value:
        result = subprocess.run([sys.executable, "-m", "jaxprune.experiments.compile_check",
                                 f"--pipeline_flags={_PIPELINE_FLAGS.value}", f"--topology={topology}"],
                                capture_output=True, text=True)
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if not lines:
            sys.exit(f"{topology}: the compile check printed nothing:\n{result.stderr[-2000:]}")
        for line in lines:
            mesh = ",".join(f"{axis}={size}" for axis, size in line["mesh"].items())
            usable = line.get("usable_fraction", HEADROOM) * line["hbm_bytes_per_device"]
            for program in line["programs"]:
                xla = program.get("flops_source", "xla") == "xla"
                print(f"| {topology} | {line['stage']} | {mesh} | {program['program']} | "
                      f"{program['bytes_per_device'] / 2**30:.2f} | {line['hbm_bytes_per_device'] / 2**30:.0f} | "
                      f"{'yes' if program['bytes_per_device'] <= usable else 'NO'} | "
                      f"{_number(program['flops_per_device'] / 1e12, '.2f', xla)} | "
                      f"{program['model_flops_per_device'] / 1e12:.2f} | "
                      f"{_number(program['model_flops_per_device'] / max(program['flops_per_device'], 1), '.3f', xla)} | "
                      f"{program['seconds_to_compile']:.0f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
