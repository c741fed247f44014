"""Student distillation: fine-tune a student on chains at one keep ratio, then export it in Hugging Face format.

    python -m jaxprune.experiments.distill --chains=outputs/pruned.jsonl --keep_ratio=0.7 --output_dir=outputs/student

--chains is the prune CLI's output (any method) or, with --keep_ratio=1, teacher chains. The kept reasoning tokens
are decoded with the pruner's tokenizer (each record's `pruner`, or --pruner) and re-tokenized by the student's chat
template; loss is on the assistant turn only (`jaxprune/distill/`). Checkpoints (parameters, optimizer state, step,
data position) go to --output_dir/checkpoints, so a rerun resumes. The loss goes to --output_dir/metrics.jsonl and
to TensorBoard event files in --output_dir/tensorboard. The trained student is written to --output_dir/student,
loadable by `transformers`, with `distillation.json` beside its weights (chains, method, keep ratio asked and
achieved, training settings), which the evaluate CLI copies into its summary. With several processes
(`--coordinator_address`, see `jaxprune/distributed.py`) the mesh spans every host's devices, each host builds its
own rows of every batch, and process 0 writes the metrics and the student.
"""

import dataclasses
import json
import os

from absl import app, flags, logging

from jaxprune import distributed
from jaxprune.checkpoints import DEFAULT_MODEL
from jaxprune.distill.lora import DEFAULT_TARGETS

_STUDENT = flags.DEFINE_string("student", DEFAULT_MODEL, "Student to fine-tune: GGUF file, Hugging Face directory, "
                               "hub id, or packaged:NAME.")
_CHAINS = flags.DEFINE_string("chains", None, "Chains (JSONL, or parquet as shared through `datasets`): pruned "
                              "(prune CLI output) or teacher chains.",
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
_MESH = flags.DEFINE_string("mesh", "data=-1", "Device mesh, e.g. data=2,fsdp=2,tensor=2 (within a slice when "
                            "--dcn_mesh is given).")
_DCN_MESH = flags.DEFINE_string("dcn_mesh", "", "Axis sizes across slices (or hosts) over the data-centre network, "
                                "e.g. data=2; each --mesh axis then spans both.")


def main(argv):
    del argv
    from jaxprune.data.records import read_chains
    from jaxprune.distill.examples import check_prunable
    from jaxprune.distill.train import TrainConfig

    config = TrainConfig(steps=_STEPS.value, batch_size=_BATCH_SIZE.value, max_length=_MAX_LENGTH.value,
                         learning_rate=_LEARNING_RATE.value, warmup_steps=_WARMUP_STEPS.value,
                         weight_decay=_WEIGHT_DECAY.value, accumulation=_ACCUMULATION.value, seed=_SEED.value,
                         checkpoint_every=_CHECKPOINT_EVERY.value, lora_rank=_LORA_RANK.value,
                         lora_alpha=_LORA_ALPHA.value, lora_targets=tuple(_LORA_TARGETS.value),
                         compute_dtype=_COMPUTE_DTYPE.value)
    chains = read_chains(_CHAINS.value)  # malformed chains fail here, before any model loads
    for where, record in chains:
        check_prunable(record, where, _KEEP_RATIO.value)
        if _KEEP_RATIO.value < 1 and not (_PRUNER.value or record.get("pruner")):
            raise app.UsageError(f"{where}: no field 'pruner' to decode its tokens with; pass --pruner")

    distributed.initialize()
    import jax
    import jax.numpy as jnp
    from tensorboardX import SummaryWriter
    from tqdm import tqdm

    from jaxprune import sharding
    from jaxprune.checkpoints import load_model, load_tokenizer, save_hf_model
    from jaxprune.data.records import write_text_atomic
    from jaxprune.distill.examples import kept_fraction, reasoning_at, training_example
    from jaxprune.distill.train import train

    mesh = sharding.make_mesh(sharding.parse_mesh_shape(_MESH.value),
                              across_slices=sharding.parse_mesh_shape(_DCN_MESH.value) or None)
    distributed.log_topology(mesh)
    student, tokenizer = load_model(_STUDENT.value, dtype=jnp.dtype(_DTYPE.value), mesh=mesh)
    if tokenizer is None:
        raise app.UsageError(f"--student={_STUDENT.value}: no tokenizer files next to the model")
    pruner_tokenizers = {}
    examples = []
    for _, record in chains:
        pruner = None
        if _KEEP_RATIO.value < 1:
            spec = _PRUNER.value or record["pruner"]
            if spec not in pruner_tokenizers:
                pruner_tokenizers[spec] = load_tokenizer(spec)
                if pruner_tokenizers[spec] is None:
                    raise app.UsageError(f"pruner {spec}: no tokenizer files next to the model")
            pruner = pruner_tokenizers[spec]
        examples.append(training_example(tokenizer, record, reasoning_at(record, pruner, _KEEP_RATIO.value)))
    logging.info("%d examples at keep ratio %s; %d tokens on average", len(examples), _KEEP_RATIO.value,
                 sum(len(e.tokens) for e in examples) // max(len(examples), 1))
    cut = sum(len(e.tokens) > config.max_length for e in examples)
    if cut:
        logging.warning("%d of %d examples are longer than --max_length=%d and are cut (their answers may be lost)",
                        cut, len(examples), config.max_length)

    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    metrics_path = os.path.join(_OUTPUT_DIR.value, "metrics.jsonl")
    writer = SummaryWriter(os.path.join(_OUTPUT_DIR.value, "tensorboard")) if jax.process_index() == 0 else None
    progress = tqdm(total=config.steps, desc="distilling", unit="batch", mininterval=1.0)
    losses = []

    def on_step(step, loss):
        if not losses:
            progress.update(step - 1)  # resumed
        losses.append(loss)
        progress.update()
        progress.set_postfix(loss=f"{loss:.4f}")
        if writer is not None:
            writer.add_scalar("train/loss", loss, step)
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "loss": loss}) + "\n")

    trained = train(student, examples, config, os.path.join(_OUTPUT_DIR.value, "checkpoints"),
                    pad_id=tokenizer.pad_token_id or 0, mesh=mesh if mesh.size > 1 else None, on_step=on_step)
    progress.close()
    if writer is not None:
        writer.close()
    student_dir = os.path.join(_OUTPUT_DIR.value, "student")
    save_hf_model(trained, student_dir, tokenizer)
    methods = sorted({record.get("method", "unpruned") for _, record in chains}) if _KEEP_RATIO.value < 1 else []
    provenance = {"chains": _CHAINS.value, "method": "+".join(methods) or "unpruned", "keep_ratio": _KEEP_RATIO.value,
                  "achieved_keep_ratio": sum(kept_fraction(r, _KEEP_RATIO.value) for _, r in chains) / len(chains),
                  "examples": len(examples), "student": _STUDENT.value, "final_loss": losses[-1] if losses else None,
                  **dataclasses.asdict(config)}
    if jax.process_index() == 0:
        write_text_atomic(os.path.join(student_dir, "distillation.json"), json.dumps(provenance, indent=2))
    logging.info("student written to %s", os.path.join(_OUTPUT_DIR.value, "student"))


if __name__ == "__main__":
    app.run(main)
