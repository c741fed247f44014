"""Will the pipeline fit? Compiles each stage's real program for a TPU topology or a host's NVIDIA GPUs, on this
machine, without TPUs or GPUs.

    python -m jaxprune.experiments.compile_check --pipeline_flags=experiments/paper_gsm8k/pipeline.flags \
        --topology=v5e:2x4
    python -m jaxprune.experiments.compile_check --pipeline_flags=experiments/paper_gsm8k_gpu/pipeline.flags \
        --topology=h100:8

reads the pipeline's stage flagfiles (teacher: the first --chain_flags file; prune; distill) or one stage's flagfile
(`--stage=prune --flags=experiments/paper_gsm8k/prune.flags`), builds each stage's programs at real size from the
model's config (shipped for the paper's models, so no hub is needed) and compiles them with libtpu for the topology,
or with the CUDA plugin for `<gpu>:<n>`, n GPUs of one host (a100, h100, h200, b200: `compile_check.GPUS`), with
JAX_PLATFORMS=cpu (`jaxprune/compile_check.py`). One JSON line per stage: bytes per device against the device's
memory, whether it fits, FLOPs per device (XLA's, or on GPUs, where XLA counts none, the cost model's:
`flops_source`) next to the cost model's, and the compile time. Exits 1 when a stage does not fit. Needs the `tpu`
extra (`pip install -e ".[tpu]"`) for TPUs, the `cuda12` extra for GPUs.
"""

import json
import os
import sys

# Before jax loads: libtpu only compiles here (no chips), so it must neither look for a metadata server or other
# hosts, nor take the lock that a process using real TPUs would hold. XLA may turn an all-gather and its matmul into
# a loop over the shards (a windowed einsum), whose body cost analysis counts once; off here, every FLOP is counted,
# and the memory is the plain all-gather's, an upper bound on the windowed one's.
for _name, _value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                      ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"), ("JAX_PLATFORMS", "cpu"),
                      ("LIBTPU_INIT_ARGS", "--xla_tpu_enable_windowed_einsum_for_all_gather=false "
                                           "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false")):
    os.environ.setdefault(_name, _value)

from absl import app, flags  # noqa: E402

from jaxprune.checkpoints import DEFAULT_MODEL  # noqa: E402
from jaxprune.distill.lora import DEFAULT_TARGETS  # noqa: E402
from jaxprune.experiments import cli  # noqa: E402
from jaxprune.experiments.flagfiles import read_flagfile  # noqa: E402

STAGES = ("teacher", "prune", "distill")
# The stage CLIs' defaults for the flags read here (tests/test_compile_check.py keeps them equal).
DEFAULTS = {
    "teacher": {"model": DEFAULT_MODEL, "dtype": "float32", "mesh": "data=-1", "batch_size": "16",
                "max_new_tokens": "1536"},
    "prune": {"model": DEFAULT_MODEL, "dtype": "float32", "mesh": "data=-1", "token_budget": "4096",
              "keep_ratio": "0.7"},
    "distill": {"student": DEFAULT_MODEL, "dtype": "float32", "mesh": "data=-1", "batch_size": "8",
                "max_length": "512", "accumulation": "1", "lora_rank": "0", "lora_alpha": "16.0",
                "lora_targets": ",".join(DEFAULT_TARGETS), "compute_dtype": "float32", "remat": "none",
                "steps": "100", "warmup_steps": "10"},
}

_PIPELINE_FLAGS = flags.DEFINE_string("pipeline_flags", None, "The pipeline's flagfile: every stage is checked.")
_STAGE = flags.DEFINE_enum("stage", None, STAGES, "Check one stage, with --flags.")
_FLAGS = flags.DEFINE_string("flags", None, "That stage's flagfile (generate, prune or distill CLI).")
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x4", "TPU topology libtpu compiles for: v5e:2x4, v5p:2x2x1, "
                                "v4:2x2x1, v6e:2x4, ...; or <gpu>:<n>, n GPUs of one host: h100:8, a100:8, h200:1, "
                                "b200:8")
_PROMPT_TOKENS = flags.DEFINE_integer("prompt_tokens", 180, "Prompt of a chain (system, question, template).")
_REASONING_TOKENS = flags.DEFINE_list("reasoning_tokens", ["250", "1500"], "Reasoning lengths the pruning kernel "
                                      "is compiled for (each at its first and last step).")
_ANSWER_TOKENS = flags.DEFINE_integer("answer_tokens", 14, "Answer and end-of-turn tokens of a chain.")
_TEACHER_PROMPT_TOKENS = flags.DEFINE_integer("teacher_prompt_tokens", 384, "Longest teacher prompt (the decoder "
                                              "sizes its cache for the longest prompt of the questions).")


def _stage_flags() -> dict[str, dict[str, str]]:
    """Each checked stage's flag values: its flagfile over the CLI's defaults (the pipeline's lowest keep ratio
    for pruning, which is what the pipeline prunes to)."""
    if bool(_PIPELINE_FLAGS.value) == bool(_STAGE.value):
        raise app.UsageError("pass either --pipeline_flags, or --stage with --flags")
    if _STAGE.value:
        if not _FLAGS.value:
            raise app.UsageError("--stage needs --flags (that stage's flagfile)")
        files = {_STAGE.value: _FLAGS.value}
    else:
        pipeline = read_flagfile(_PIPELINE_FLAGS.value)
        for name in ("chain_flags", "prune_flags", "distill_flags"):
            if name not in pipeline:
                raise app.UsageError(f"{_PIPELINE_FLAGS.value}: no --{name}")
        files = {"teacher": pipeline["chain_flags"].split(",")[0], "prune": pipeline["prune_flags"],
                 "distill": pipeline["distill_flags"]}
    values = {stage: {**DEFAULTS[stage], **read_flagfile(path)} for stage, path in files.items()}
    if _PIPELINE_FLAGS.value and "keep_ratios" in pipeline:
        values["prune"]["keep_ratio"] = str(min(float(r) for r in pipeline["keep_ratios"].split(",")))
    return values


def main(argv):
    del argv
    stage_flags = _stage_flags()  # unreadable flagfiles fail here, before libtpu loads
    import jax.numpy as jnp

    from jaxprune import compile_check, sharding
    from jaxprune.checkpoints.resolve import load_config
    from jaxprune.distill.train import TrainConfig

    devices = compile_check.topology_devices(_TOPOLOGY.value)  # an unknown GPU is refused before anything compiles
    all_fit = True
    for stage, values in stage_flags.items():
        config = load_config(values["student" if stage == "distill" else "model"])
        mesh = sharding.make_mesh(sharding.parse_mesh_shape(values["mesh"]), devices=devices)
        dtype = jnp.dtype(values["dtype"])
        if stage == "teacher":
            programs = compile_check.teacher_programs(
                config, mesh, dtype=dtype, batch_size=int(values["batch_size"]),
                prompt_tokens=_TEACHER_PROMPT_TOKENS.value, max_new_tokens=int(values["max_new_tokens"]))
        elif stage == "prune":
            programs = compile_check.prune_programs(
                config, mesh, dtype=dtype, token_budget=int(values["token_budget"]), prompt=_PROMPT_TOKENS.value,
                reasoning=[int(n) for n in _REASONING_TOKENS.value], answer=_ANSWER_TOKENS.value,
                keep_ratio=float(values["keep_ratio"]))
        else:
            train_config = TrainConfig(
                steps=int(values["steps"]), warmup_steps=int(values["warmup_steps"]),
                batch_size=int(values["batch_size"]),
                max_length=int(values["max_length"]), accumulation=int(values["accumulation"]),
                lora_rank=int(values["lora_rank"]), lora_alpha=float(values["lora_alpha"]),
                lora_targets=tuple(values["lora_targets"].split(",")), compute_dtype=values["compute_dtype"],
                remat=values["remat"])
            programs = compile_check.distill_programs(config, mesh, train_config, dtype=dtype)
        report = compile_check.stage_report(stage, programs, mesh, _TOPOLOGY.value)
        print(json.dumps(report), flush=True)
        all_fit &= report["fits"]
    sys.exit(0 if all_fit else 1)


if __name__ == "__main__":
    cli.run(main)
