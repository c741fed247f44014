"""Student distillation: fine-tune a student on chains at one keep ratio, then export it in Hugging Face format.

    python -m jaxprune.experiments.distill --chains=outputs/pruned.jsonl --keep_ratio=0.7 --output_dir=outputs/student

--chains is the prune CLI's output (any method) or, with --keep_ratio=1, teacher chains; with
`--chains=tfds:<data_dir>/<name>` they are read as a TFDS ArrayRecord dataset (`python -m
jaxprune.experiments.export_tfds` writes one) through grain, record by record, into the same batches as from the
JSONL, the loader's position checkpointed. The kept reasoning tokens
are decoded with the pruner's tokenizer (each record's `pruner`, or --pruner) and re-tokenized by the student's chat
template; loss is on the assistant turn only (`jaxprune/distill/`). Checkpoints (parameters, optimizer state, step,
data position) go to --output_dir/checkpoints, so a rerun resumes. The loss goes to --output_dir/metrics.jsonl and
to TensorBoard event files in --output_dir/tensorboard. The trained student is written to --output_dir/student,
loadable by `transformers`, with `distillation.json` beside its weights (chains, method, keep ratio asked and
achieved, training settings), which the evaluate CLI copies into its summary. With several processes
(`--coordinator_address`, see `jaxprune/distributed.py`) the mesh spans every host's devices, each host builds its
own rows of every batch, and process 0 writes the metrics and the student. `--remat` trades compute for memory.
The work itself is `jaxprune.distill.run.distill`; this CLI turns its flags into a `DistillConfig`.
"""

from absl import flags

from jaxprune import distributed  # noqa: F401  (defines the multi-process flags)
from jaxprune.checkpoints import DEFAULT_MODEL
from jaxprune.distill.lora import DEFAULT_TARGETS
from jaxprune.experiments import cli
from jaxprune.models.llama import REMAT_POLICIES

_STUDENT = flags.DEFINE_string("student", DEFAULT_MODEL, "Student to fine-tune: GGUF file, Hugging Face directory, "
                               "hub id, or packaged:NAME.")
_CHAINS = flags.DEFINE_string("chains", None, "Chains (JSONL, or parquet as shared through `datasets`, or "
                              "tfds:<data_dir>/<name> for a TFDS ArrayRecord dataset written by export_tfds, read "
                              "on demand through grain): pruned (prune CLI output) or teacher chains.",
                              required=True)
_KEEP_RATIO = flags.DEFINE_float("keep_ratio", 1.0, "Train on the reasoning at this keep ratio (1: unpruned).")
_PRUNER = flags.DEFINE_string("pruner", None, "Tokenizer that pruned the chains (default: each record's `pruner`).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Checkpoints, metrics and the exported student.",
                                  required=True)
_STEPS = flags.DEFINE_integer("steps", 100, "Training batches.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per batch (over all devices).")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 512, "Tokens per example (longer ones are cut).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate (AdamW).")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 10, "Linear warmup, in optimizer updates.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.0, "AdamW weight decay.")
_ACCUMULATION = flags.DEFINE_integer("accumulation", 1, "Batches per optimizer update.")
_LORA_RANK = flags.DEFINE_integer("lora_rank", 0, "LoRA rank; 0 trains every parameter.")
_LORA_ALPHA = flags.DEFINE_float("lora_alpha", 16.0, "LoRA alpha (scale alpha / rank).")
_LORA_TARGETS = flags.DEFINE_list("lora_targets", list(DEFAULT_TARGETS), "Modules that get LoRA adapters.")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 50, "Checkpoint interval in batches.")
_SEED = flags.DEFINE_integer("seed", 0, "Data order and LoRA initialisation.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ("float32", "bfloat16"), "Student parameter dtype (the optimizer's "
                           "master weights).")
_COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ("float32", "bfloat16"), "bfloat16: cast the "
                                   "weights to bfloat16 for the forward and backward passes (float32 masters with "
                                   "--dtype=float32); float32: compute in the parameter dtype.")
_REMAT = flags.DEFINE_enum("remat", "none", tuple(REMAT_POLICIES), "What each decoder layer keeps for the backward "
                           "pass (MaxText's remat_policy): none: every activation (fastest, most memory); full: only "
                           "its input, the whole layer recomputed; dots: the matmul outputs, the cheap elementwise "
                           "rest recomputed.")
_MESH = flags.DEFINE_string("mesh", "data=-1", "Device mesh, e.g. data=2,fsdp=2,tensor=2 (within a slice when "
                            "--dcn_mesh is given).")
_DCN_MESH = flags.DEFINE_string("dcn_mesh", "", "Axis sizes across slices (or hosts) over the data-centre network, "
                                "e.g. data=2; each --mesh axis then spans both.")


def main(argv):
    del argv
    from jaxprune.distill.run import distill

    try:
        config = _config()
    except ValueError as error:  # a flag value out of range, or a malformed --mesh
        raise cli.FlagError(str(error)) from None
    distill(config)


def _config():
    """The run the flags describe; ValueError on a bad value."""
    from jaxprune.distill.run import DistillConfig
    from jaxprune.distill.train import TrainConfig

    train = TrainConfig(steps=_STEPS.value, batch_size=_BATCH_SIZE.value, max_length=_MAX_LENGTH.value,
                        learning_rate=_LEARNING_RATE.value, warmup_steps=_WARMUP_STEPS.value,
                        weight_decay=_WEIGHT_DECAY.value, accumulation=_ACCUMULATION.value, seed=_SEED.value,
                        checkpoint_every=_CHECKPOINT_EVERY.value, lora_rank=_LORA_RANK.value,
                        lora_alpha=_LORA_ALPHA.value, lora_targets=tuple(_LORA_TARGETS.value),
                        compute_dtype=_COMPUTE_DTYPE.value, remat=_REMAT.value)
    return DistillConfig(chains=_CHAINS.value, output_dir=_OUTPUT_DIR.value, train=train, keep_ratio=_KEEP_RATIO.value,
                         pruner=_PRUNER.value, student=_STUDENT.value, dtype=_DTYPE.value, mesh=_MESH.value,
                         dcn_mesh=_DCN_MESH.value)


if __name__ == "__main__":
    cli.run(main)
