"""Runs one jaxprune experiment as a SLURM batch job on a GPU cluster: one process per GPU, joined by
`jax.distributed`.

    python launch/slurm.py --name=gsm8k --nodes=2 --gpus_per_node=8 --module=pipeline \
        --flagfile_to_run=experiments/paper_gsm8k/pipeline.flags [--partition=gpu --time=48:00:00] [--dry_run]

Writes `outputs/slurm/<name>.sbatch` and submits it with `sbatch`; `--dry_run` prints the script and the command
instead. Every task runs the same command with `--coordinator_address=auto`: under `srun`, `jax.distributed` reads
the coordinator, the process count, this process's id and its GPU (`SLURM_LOCALID`) from SLURM's environment, which
is why there is one task per GPU. The checkout must be on a
filesystem every node sees, and so must the outputs (only process 0 writes shared ones).
"""

import os
import shlex
import subprocess
import sys

from absl import app, flags

_NAME = flags.DEFINE_string("name", None, "Job name.", required=True)
_NODES = flags.DEFINE_integer("nodes", 1, "Nodes.")
_GPUS = flags.DEFINE_integer("gpus_per_node", 8, "GPUs per node (one jaxprune process each).")
_CPUS = flags.DEFINE_integer("cpus_per_task", 8, "CPU cores per process.")
_TIME = flags.DEFINE_string("time", "24:00:00", "Wall-clock limit.")
_PARTITION = flags.DEFINE_string("partition", None, "SLURM partition.")
_ACCOUNT = flags.DEFINE_string("account", None, "SLURM account.")
_MODULE = flags.DEFINE_string("module", "prune", "Which jaxprune.experiments entry point to run.")
_FLAGFILE = flags.DEFINE_string("flagfile_to_run", None, "The experiment's flagfile.", required=True)
_SETUP = flags.DEFINE_string("setup", "source .venv/bin/activate", "Shell line that prepares the environment.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the script and the submit command, run nothing.")


def batch_script(checkout: str) -> str:
    """The sbatch script."""
    options = {"job-name": _NAME.value, "nodes": _NODES.value, "ntasks-per-node": _GPUS.value,
               "gpus-per-node": _GPUS.value,
               "cpus-per-task": _CPUS.value, "time": _TIME.value, "output": f"outputs/slurm/{_NAME.value}-%j.out"}
    options.update({key: value for key, value in (("partition", _PARTITION.value), ("account", _ACCOUNT.value))
                    if value})
    command = shlex.join(["python", "-m", f"jaxprune.experiments.{_MODULE.value}", f"--flagfile={_FLAGFILE.value}",
                          "--coordinator_address=auto"])
    return "\n".join(["#!/bin/bash", *(f"#SBATCH --{key}={value}" for key, value in options.items()),
                      f"cd {shlex.quote(checkout)}", _SETUP.value, "set -euo pipefail",
                      f"srun --kill-on-bad-exit=1 {command}", ""])


def main(argv):
    del argv
    if not os.path.isfile(_FLAGFILE.value):
        raise app.UsageError(f"--flagfile_to_run={_FLAGFILE.value} does not exist in this checkout")
    script = batch_script(os.getcwd())
    path = os.path.join("outputs", "slurm", f"{_NAME.value}.sbatch")
    submit = ["sbatch", path]
    if _DRY_RUN.value:
        print(f"# {path}\n{script}\n{shlex.join(submit)}")
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        f.write(script)
    os.replace(f"{path}.tmp", path)
    print(shlex.join(submit), flush=True)
    if subprocess.run(submit).returncode:
        sys.exit(f"failed: {shlex.join(submit)}")


if __name__ == "__main__":
    app.run(main)
