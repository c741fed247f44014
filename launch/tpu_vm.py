"""Runs one jaxprune experiment on a Cloud TPU VM (a single host or a pod slice): create, copy, install, run on
every worker, collect the outputs, delete.

    python launch/tpu_vm.py --name=prune-v5e --zone=us-west4-a --accelerator_type=v5litepod-8 \
        --module=pipeline --flagfile_to_run=experiments/paper_gsm8k/pipeline.flags [--dry_run]

The code that travels is this checkout's committed tree (`git archive HEAD`). Every worker runs the same command;
`--coordinator_address=auto` lets `jax.distributed` find the pod's processes, and only process 0 writes shared
outputs, so collecting worker 0's `outputs/` collects the run. On a pod slice (several workers) the outputs must sit
on storage every worker sees (a mounted bucket or Filestore; see the pipeline's --work_dir). `--dry_run` prints the exact commands instead of
running them; `--keep` leaves the VM up (to rerun: a run resumes where it stopped).
"""

import os
import shlex
import subprocess
import sys

from absl import app, flags

_NAME = flags.DEFINE_string("name", None, "TPU VM name.", required=True)
_ZONE = flags.DEFINE_string("zone", None, "Zone, e.g. us-west4-a.", required=True)
_ACCELERATOR = flags.DEFINE_string("accelerator_type", "v5litepod-8", "TPU type and size.")
_VERSION = flags.DEFINE_string("version", "v2-alpha-tpuv5-lite", "TPU VM software version.")
_PROJECT = flags.DEFINE_string("project", None, "Google Cloud project (default: gcloud's).")
_SPOT = flags.DEFINE_bool("spot", False, "Create a Spot VM.")
_MODULE = flags.DEFINE_string("module", "pipeline", "Which jaxprune.experiments entry point to run.")
_FLAGFILE = flags.DEFINE_string("flagfile_to_run", None, "The experiment's flagfile (a path in this checkout).",
                                required=True)
_OUTPUTS = flags.DEFINE_string("outputs", "outputs", "Folder (relative to the checkout) to collect from worker 0.")
_COLLECT_TO = flags.DEFINE_string("collect_to", None, "Local folder the outputs become (default: outputs/<name>; "
                                  "must not exist yet).")
_KEEP = flags.DEFINE_bool("keep", False, "Do not delete the VM at the end.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")

REMOTE_DIR = "jaxprune"
ARCHIVE = "/tmp/jaxprune-src.tar.gz"


def commands() -> list[list[str]]:
    """Every command of the launch, in order."""
    where = [f"--zone={_ZONE.value}"] + ([f"--project={_PROJECT.value}"] if _PROJECT.value else [])
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    remote = (f"mkdir -p {REMOTE_DIR} && tar -xzf jaxprune-src.tar.gz -C {REMOTE_DIR} && cd {REMOTE_DIR} && "
              f"pip install -q -e '.[tpu]' && "
              + shlex.join(["python3", "-m", f"jaxprune.experiments.{_MODULE.value}",
                            f"--flagfile={_FLAGFILE.value}", "--coordinator_address=auto"]))
    steps = [
        ["git", "archive", "--format=tar.gz", f"--output={ARCHIVE}", "HEAD"],
        [*tpu, "create", _NAME.value, *where, f"--accelerator-type={_ACCELERATOR.value}",
         f"--version={_VERSION.value}", *(["--spot"] if _SPOT.value else [])],
        [*tpu, "scp", ARCHIVE, f"{_NAME.value}:jaxprune-src.tar.gz", *where, "--worker=all"],
        [*tpu, "ssh", _NAME.value, *where, "--worker=all", f"--command={remote}"],
        [*tpu, "scp", "--recurse", f"{_NAME.value}:{REMOTE_DIR}/{_OUTPUTS.value}",
         _COLLECT_TO.value or os.path.join("outputs", _NAME.value), *where, "--worker=0"],
    ]
    if not _KEEP.value:
        steps.append([*tpu, "delete", _NAME.value, *where, "--quiet"])
    return steps


def main(argv):
    del argv
    committed = subprocess.run(["git", "cat-file", "-e", f"HEAD:{_FLAGFILE.value}"], capture_output=True)
    if committed.returncode:  # only the committed tree travels (git archive HEAD)
        raise app.UsageError(f"--flagfile_to_run={_FLAGFILE.value} is not committed in this checkout")
    collect_to = _COLLECT_TO.value or os.path.join("outputs", _NAME.value)
    if os.path.exists(collect_to):  # scp --recurse would nest the outputs inside it
        raise app.UsageError(f"--collect_to={collect_to} exists already; choose another")
    if not _DRY_RUN.value:
        os.makedirs(os.path.dirname(os.path.abspath(collect_to)), exist_ok=True)
    for command in commands():
        print(shlex.join(command), flush=True)
        if not _DRY_RUN.value and subprocess.run(command).returncode:
            sys.exit(f"failed: {shlex.join(command)}\nThe VM (if created) is still up: fix and rerun the remaining "
                     f"commands (--dry_run lists them), or delete it with gcloud compute tpus tpu-vm delete "
                     f"{_NAME.value} --zone={_ZONE.value}")


if __name__ == "__main__":
    app.run(main)
