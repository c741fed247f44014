"""Peak host memory of pruning with replicated against split weights, on 8 simulated CPU devices.

    python benchmarks/sharded_memory.py [--meshes=data=8,fsdp=8,fsdp=4;tensor=2]

On simulated CPU devices every device's buffers live in host memory, so a weight copied to each of 8 devices costs
8 copies, and a weight split 8 ways one copy in all: the peak resident memory of a run shows whether the weights
really were split. Each mesh runs in its own process (loads SmolLM2-135M float32 with that mesh, then prunes two
greedy steps of a demo chain) and reports its own peak RSS after loading and after pruning (the kernel's
temporaries live once per simulated device too). Prints a markdown table with the ratio to the
replicated run, side by side in one run.
"""

import json
import os
import subprocess
import sys

from absl import app, flags

_MESHES = flags.DEFINE_list("meshes", ["data=8", "fsdp=8", "fsdp=4;tensor=2"], "Meshes to compare (';' "
                            "separates axes inside one mesh); the first is the reference.")

_CHILD = r"""
import json, resource, sys, time
from jaxprune import sharding
from jaxprune.checkpoints import load_model
from jaxprune.data.prompts import split_chain
from jaxprune.pruning.greedy import PruneConfig, greedy_prune
from jaxprune.pruning.scoring import Scorer
mesh = sharding.make_mesh(sharding.parse_mesh_shape(sys.argv[1]))
model, tokenizer = load_model("packaged:SmolLM2-135M-Instruct", mesh=mesh)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
record = json.loads(open("experiments/data/demo_chains.jsonl").readline())
split = split_chain(tokenizer, record["question"], record["reasoning"], record["answer"], record["system"])
started = time.perf_counter()
trace = greedy_prune(Scorer(model, token_budget=1024, mesh=mesh), split, PruneConfig(keep_ratio=0.95))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
print(json.dumps({"seconds": time.perf_counter() - started, "order": trace.deletion_order, "peak_gib": peak,
                  "loaded_gib": loaded}))
"""


def _run(mesh: str) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", _CHILD, mesh.replace(";", ",")], capture_output=True, text=True,
                            env=env, cwd=os.path.join(os.path.dirname(__file__), ".."), check=True)
    return json.loads(result.stdout.splitlines()[-1])  # the child's own peak RSS


def main(argv):
    del argv
    runs = {mesh: _run(mesh) for mesh in _MESHES.value}
    reference = runs[_MESHES.value[0]]
    first = _MESHES.value[0].replace(";", ",")
    print(f"| mesh | peak RSS loaded (GiB) | vs {first} | peak RSS pruning (GiB) | vs {first} | pruning (s) | "
          "same deletions |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for mesh, run in runs.items():
        print(f"| {mesh.replace(';', ',')} | {run['loaded_gib']:.2f} | {run['loaded_gib'] / reference['loaded_gib']:.2f} "
              f"| {run['peak_gib']:.2f} | {run['peak_gib'] / reference['peak_gib']:.2f} | {run['seconds']:.1f} | "
              f"{run['order'] == reference['order']} |")


if __name__ == "__main__":
    app.run(main)
