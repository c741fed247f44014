"""Student distillation as one library call: chains at a keep ratio in, a fine-tuned student in Hugging Face format
out (the distill CLI is its flags turned into a `DistillConfig`).

`distill` reads top to bottom: chains checked (before any model loads, so a malformed file fails in seconds), the
multi-process run joined, the mesh, the student loaded sharded, the examples built, training (resumable from
`output_dir/checkpoints`, loss to a progress bar, `metrics.jsonl` and TensorBoard), the student exported to
`output_dir/student` with `distillation.json` beside it (what it was trained on and how).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any

from absl import flags, logging

from jaxprune import distributed, files
from jaxprune.checkpoints import DEFAULT_MODEL, ModelSpec
from jaxprune.distill.train import TrainConfig

Chains = list[tuple[str, dict[str, Any]]]  # (file:line, record) pairs, as `read_chains` gives them


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    chains: str                        # pruned chains (prune CLI output) or, at keep ratio 1, teacher chains;
                                       # JSONL, parquet, or tfds:<data_dir>/<name> (`jaxprune.data.tfds_chains`)
    output_dir: str                    # checkpoints, metrics and the exported student
    train: TrainConfig
    keep_ratio: float = 1.0            # train on the reasoning at this keep ratio (1: unpruned)
    pruner: str | None = None          # tokenizer that pruned the chains (default: each record's `pruner`)
    student: str = DEFAULT_MODEL       # GGUF file, Hugging Face directory, hub id, or packaged:NAME
    dtype: str = "float32"             # the student's parameter dtype: the optimizer's master weights
    mesh: str = "data=-1"              # device mesh within a slice, e.g. data=2,fsdp=2,tensor=2
    dcn_mesh: str = ""                 # axis sizes across slices (or hosts), e.g. data=2

    def __post_init__(self):
        _ = self.student_spec  # a bad dtype or a malformed mesh shape fails here, before any work

    @property
    def student_spec(self) -> ModelSpec:
        return ModelSpec(self.student, dtype=self.dtype, mesh=self.mesh, across_slices=self.dcn_mesh)


def distill(config: DistillConfig) -> str:
    """Trains the student `config` describes (resuming its checkpoints) and returns the exported student's
    directory. With several processes each builds its own rows of every batch; process 0 writes the files."""
    chains = _checked_chains(config)
    if flags.FLAGS.is_parsed():  # a CLI process joins the run its flags describe; a library caller runs alone
        distributed.initialize()  # (or has joined jax.distributed itself)

    import jax

    from jaxprune.checkpoints import save_hf_model
    from jaxprune.data.records import write_text_atomic
    from jaxprune.distill.train import train

    student, tokenizer, mesh = config.student_spec.load(devices=jax.devices())  # every process's devices
    distributed.log_topology(mesh)
    examples = _examples(chains, tokenizer, config)

    files.make_dir(config.output_dir)
    with contextlib.closing(_TrainingLog(config.output_dir, config.train.steps)) as log:
        trained = train(student, examples, config.train, os.path.join(config.output_dir, "checkpoints"),
                        pad_id=tokenizer.pad_token_id or 0, mesh=mesh if mesh.size > 1 else None, on_step=log)

    student_dir = os.path.join(config.output_dir, "student")
    save_hf_model(trained, student_dir, tokenizer)  # every process: sharded parameters are gathered
    if jax.process_index() == 0:
        provenance = _provenance(config, chains, examples=len(examples),
                                 final_loss=log.losses[-1] if log.losses else None)
        write_text_atomic(os.path.join(student_dir, "distillation.json"), json.dumps(provenance, indent=2))
    logging.info("student written to %s", student_dir)
    return student_dir


def _checked_chains(config: DistillConfig) -> Chains:
    """Every chain, read and checked for the keep ratio: errors name file:line and field."""
    from jaxprune.data.records import RecordError, read_chains
    from jaxprune.data.tfds_chains import TfdsChains, is_tfds
    from jaxprune.distill.examples import check_prunable

    # A TFDS dataset (tfds:<data_dir>/<name>) is read on demand: this check streams through it, holding nothing.
    chains = TfdsChains(config.chains) if is_tfds(config.chains) else read_chains(config.chains)
    for where, record in chains:
        check_prunable(record, where, config.keep_ratio)
        if config.keep_ratio < 1 and not (config.pruner or record.get("pruner")):
            raise RecordError(f"{where}: no field 'pruner' to decode its tokens with; pass --pruner")
    return chains


def _examples(chains: Chains, tokenizer, config: DistillConfig):
    """The chains in the student's chat template at the keep ratio; the kept reasoning tokens are decoded with the
    tokenizer of the model that pruned them (each loaded once)."""
    from jaxprune.distill.examples import reasoning_at, training_example

    pruner_tokenizers = {}

    def to_example(record):
        pruner = None
        if config.keep_ratio < 1:
            spec = config.pruner or record["pruner"]
            if spec not in pruner_tokenizers:
                pruner_tokenizers[spec] = ModelSpec(spec).tokenizer()
            pruner = pruner_tokenizers[spec]
        return training_example(tokenizer, record, reasoning_at(record, pruner, config.keep_ratio))

    if not isinstance(chains, list):  # read on demand: each batch renders its own rows (through grain)
        from jaxprune.distill.streamed import StreamedExamples

        logging.info("%d chains at keep ratio %s, rendered as batches need them", len(chains), config.keep_ratio)
        return StreamedExamples(chains, to_example)
    examples = [to_example(record) for _, record in chains]
    logging.info("%d examples at keep ratio %s; %d tokens on average", len(examples), config.keep_ratio,
                 sum(len(e.tokens) for e in examples) // max(len(examples), 1))
    cut = sum(len(e.tokens) > config.train.max_length for e in examples)
    if cut:
        logging.warning("%d of %d examples are longer than --max_length=%d and are cut (their answers may be lost)",
                        cut, len(examples), config.train.max_length)
    return examples


class _TrainingLog:
    """`train`'s `on_step`: a progress bar on every process; the loss to `metrics.jsonl` and TensorBoard from
    process 0 only (one copy of each file)."""

    def __init__(self, output_dir: str, steps: int):
        import jax
        from tensorboardX import SummaryWriter  # writes gs:// itself (with google-cloud-storage, which gcsfs brings)
        from tqdm import tqdm

        from jaxprune.data.records import JsonlAppender

        self.losses: list[float] = []
        writes = jax.process_index() == 0
        # An appender, so metrics.jsonl can be on GCS (batched uploads) and a torn line from a kill is cut off.
        self._metrics = JsonlAppender(os.path.join(output_dir, "metrics.jsonl")) if writes else None
        self._writer = SummaryWriter(os.path.join(output_dir, "tensorboard")) if writes else None
        self._progress = tqdm(total=steps, desc="distilling", unit="batch", mininterval=1.0)

    def __call__(self, step: int, loss: float) -> None:
        if not self.losses:
            self._progress.update(step - 1)  # resumed: the steps before this one were done by an earlier run
        self.losses.append(loss)
        self._progress.update()
        self._progress.set_postfix(loss=f"{loss:.4f}")
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss, step)
            self._metrics.append({"step": step, "loss": loss})

    def close(self) -> None:
        self._progress.close()
        if self._writer is not None:
            self._writer.close()
            self._metrics.close()


def _provenance(config: DistillConfig, chains: Chains, *, examples: int, final_loss: float | None) -> dict:
    """`distillation.json`: the chains, method and keep ratio (asked and achieved) and every training setting;
    the evaluate CLI copies it into its summary."""
    from jaxprune.distill.examples import kept_fraction

    methods = sorted({record.get("method", "unpruned") for _, record in chains}) if config.keep_ratio < 1 else []
    return {"chains": config.chains, "method": "+".join(methods) or "unpruned", "keep_ratio": config.keep_ratio,
            "achieved_keep_ratio": sum(kept_fraction(r, config.keep_ratio) for _, r in chains) / len(chains),
            "examples": examples, "student": config.student, "final_loss": final_loss,
            **dataclasses.asdict(config.train)}
