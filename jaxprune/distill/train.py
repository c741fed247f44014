"""Supervised fine-tuning of a student on chat examples: loss on the assistant turn, AdamW, resumable with orbax.

Batches are fixed-shape (`max_length`, right padding), so one compiled step serves the whole run. The example order
is a seeded permutation per epoch, so the data position is just the number of examples seen: the checkpoint stores
it with the parameters, the optimizer state and the step, and a run stopped at any checkpoint continues to the same
parameters as an uninterrupted one. The learning rate warms up linearly, then decays on a cosine; gradients can be
accumulated over several batches (`optax.MultiSteps`). With `compute_dtype="bfloat16"` the forward and backward
passes run in bfloat16 while the optimizer keeps float32 master weights. With `lora_rank` > 0 only LoRA adapters are trained
(`jaxprune.distill.lora`) and the returned model has them merged in.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprune import sharding
from jaxprune.distill import lora
from jaxprune.distill.examples import Example
from jaxprune.models.llama import Llama, causal_mask, positions_from_keep


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """`steps` batches of `batch_size` examples; the optimizer updates every `accumulation` batches."""

    steps: int
    batch_size: int = 8
    max_length: int = 512
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    accumulation: int = 1
    seed: int = 0
    checkpoint_every: int = 50
    lora_rank: int = 0                       # 0: full fine-tuning
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = lora.DEFAULT_TARGETS
    compute_dtype: str = "float32"           # "bfloat16": passes on bfloat16 casts; "float32": the parameter dtype

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank

    def __post_init__(self):
        for field in ("steps", "batch_size", "max_length", "accumulation", "checkpoint_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be float32 or bfloat16, got {self.compute_dtype!r}")


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    updates = max(config.steps // config.accumulation, 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, min(config.warmup_steps, updates - 1),
                                                  updates)
    optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    return optax.MultiSteps(optimizer, config.accumulation) if config.accumulation > 1 else optimizer


def example_indices(position: int, count: int, total: int, seed: int) -> np.ndarray:
    """Indices of the examples at data positions `position .. position + count` of an endless stream of seeded
    per-epoch permutations of `total` examples."""
    positions = np.arange(position, position + count)
    epochs, offsets = positions // total, positions % total
    return np.asarray([np.random.default_rng([seed, epoch]).permutation(total)[offset]
                       for epoch, offset in zip(epochs, offsets)])


def make_batch(examples: Sequence[Example], indices: np.ndarray, max_length: int, pad_id: int = 0):
    """Right-padded `tokens`, `loss_mask` and `valid` arrays `[batch, max_length]`; longer examples are cut."""
    tokens = np.full((len(indices), max_length), pad_id, np.int32)
    loss_mask = np.zeros((len(indices), max_length), bool)
    valid = np.zeros((len(indices), max_length), bool)
    for row, index in enumerate(indices):
        example = examples[index]
        length = min(len(example.tokens), max_length)
        tokens[row, :length] = example.tokens[:length]
        loss_mask[row, :length] = example.loss_mask[:length]
        valid[row, :length] = True
    return tokens, loss_mask, valid


def _placed_batch(examples, indices, max_length, pad_id, batch_sharding):
    """The global batch as arrays split by `batch_sharding`, each process building only the rows its devices hold
    (with several hosts, each reads its own share of every batch)."""
    shape = (len(indices), max_length)
    rows = {}  # one make_batch per distinct row slice (devices that replicate a slice share it)

    def shard(index, field):
        key = index[0].indices(len(indices))
        if key not in rows:
            rows[key] = make_batch(examples, indices[index[0]], max_length, pad_id)
        return rows[key][field]

    return [jax.make_array_from_callback(shape, batch_sharding, functools.partial(shard, field=field))
            for field in range(3)]


def masked_loss(model: Llama, tokens, loss_mask, valid) -> jax.Array:
    """Mean negative log-likelihood of the target tokens (`loss_mask`), each predicted from the tokens before it."""
    hidden, _, _ = model.hidden_states(tokens, positions_from_keep(valid), causal_mask(valid))
    log_probs = model.token_log_probs(hidden[:, :-1], tokens[:, 1:, None])[..., 0]
    weights = loss_mask[:, 1:].astype(jnp.float32)
    return -jnp.sum(log_probs * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _weights(frozen, trainable, lora_scale, dtype=None):
    """The model's parameters: the trainable ones, or the frozen base with LoRA adapters merged in; floating-point
    ones cast to `dtype` if given (the cast is differentiable, so gradients reach float32 masters)."""
    weights = trainable if frozen is None else lora.merge(frozen, trainable, lora_scale)
    if dtype is None:
        return weights
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, weights)


@functools.partial(jax.jit, static_argnames=("graphdef", "optimizer", "lora_scale", "compute_dtype"),
                   donate_argnames=("trainable", "opt_state"))
def _train_step(graphdef, frozen, trainable, opt_state, tokens, loss_mask, valid, *, optimizer, lora_scale,
                compute_dtype):
    def loss_fn(trainable):
        model = nnx.merge(graphdef, _weights(frozen, trainable, lora_scale, compute_dtype))
        return masked_loss(model, tokens, loss_mask, valid)

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss


def train(model: Llama, examples: Sequence[Example], config: TrainConfig, checkpoint_dir: str, *, pad_id: int = 0,
          mesh: Mesh | None = None, rules=sharding.DEFAULT_RULES,
          on_step: Callable[[int, float], None] | None = None) -> Llama:
    """Trains `model` for `config.steps` batches, resuming from the newest checkpoint in `checkpoint_dir`.

    With a `mesh`, parameters (and optimizer state) are sharded by the logical-axis `rules` and every batch is
    split over the batch axes (`data`, `fsdp`); LoRA adapters are replicated."""
    import orbax.checkpoint as ocp

    graphdef, params = nnx.split(model)
    if mesh is not None:
        axes = sharding.batch_sharding(mesh, 1, rules).spec[0]
        split = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
        if config.batch_size % split:
            raise ValueError(f"batch_size={config.batch_size} does not split evenly over the mesh's {split} "
                             "batch shards")
        params = jax.device_put(params, sharding.state_shardings(params, mesh, rules))
    if config.lora_rank:
        frozen, trainable = params, lora.init_adapters(params, config.lora_rank, config.lora_targets, config.seed)
        if mesh is not None:
            trainable = jax.device_put(trainable, NamedSharding(mesh, PartitionSpec()))
    else:
        frozen, trainable = None, params
    scale = config.lora_scale if config.lora_rank else 0.0
    compute_dtype = None if config.compute_dtype == "float32" else jnp.dtype(config.compute_dtype)
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(trainable)
    manager = ocp.CheckpointManager(os.path.abspath(checkpoint_dir), options=ocp.CheckpointManagerOptions(
        save_interval_steps=config.checkpoint_every, max_to_keep=2))
    step = 0
    if manager.latest_step() is not None:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore({"trainable": trainable, "opt_state": opt_state}),
            data=ocp.args.JsonRestore()))
        trainable, opt_state = restored.state["trainable"], restored.state["opt_state"]
        if restored.data["examples_seen"] != step * config.batch_size:
            raise ValueError(f"{checkpoint_dir}: checkpoint at step {step} was written with another batch size")
    while step < config.steps:
        indices = example_indices(step * config.batch_size, config.batch_size, len(examples), config.seed)
        batch = (list(map(jnp.asarray, make_batch(examples, indices, config.max_length, pad_id))) if mesh is None
                 else _placed_batch(examples, indices, config.max_length, pad_id, sharding.batch_sharding(mesh, 2,
                                                                                                      rules)))
        trainable, opt_state, loss = _train_step(graphdef, frozen, trainable, opt_state, *batch, optimizer=optimizer,
                                                 lora_scale=scale, compute_dtype=compute_dtype)
        step += 1
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"trainable": trainable, "opt_state": opt_state}),
            data=ocp.args.JsonSave({"step": step, "examples_seen": step * config.batch_size})),
            force=step == config.steps)
        if on_step is not None:
            on_step(step, float(loss))
    manager.wait_until_finished()
    manager.close()
    return nnx.merge(graphdef, _weights(frozen, trainable, scale))
