"""Supervised fine-tuning of a student on chat examples: loss on the assistant turn, AdamW, resumable with orbax.

Batches are fixed-shape (`max_length`, right padding), so one compiled step serves the whole run. The example order
is a seeded permutation per epoch, so the data position is just the number of examples seen: the checkpoint stores
it with the parameters, the optimizer state and the step, and a run stopped at any checkpoint continues to the same
parameters as an uninterrupted one. The learning rate warms up linearly, then decays on a cosine; gradients can be
accumulated over several batches (`optax.MultiSteps`). With `compute_dtype="bfloat16"` the forward and backward
passes run in bfloat16 while the optimizer keeps float32 master weights. With `lora_rank` > 0 only LoRA adapters are trained
(`jaxprune.distill.lora`) and the returned model has them merged in. `remat` trades compute for memory: each decoder
layer keeps less for the backward pass and recomputes the rest (values are unchanged).

The pieces `train` runs are public so that a compile check can use them on abstract parameters (ShapeDtypeStructs,
nothing allocated): `init_train_state` (pure, so `jax.eval_shape` runs it), `train_state_shardings`, `train_step`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprune import files, sharding
from jaxprune.distill import lora
from jaxprune.distill.examples import Example
from jaxprune.models.llama import REMAT_POLICIES, Llama, causal_mask, positions_from_keep


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
    remat: str = "none"                      # what each layer keeps for the backward pass (REMAT_POLICIES)

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0  # unused without adapters

    def __post_init__(self):
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # hashable: make_optimizer caches by config
        for field in ("steps", "batch_size", "max_length", "accumulation", "checkpoint_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be float32 or bfloat16, got {self.compute_dtype!r}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {', '.join(REMAT_POLICIES)}, got {self.remat!r}")


@functools.lru_cache(maxsize=16)
def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW with warmup and cosine decay, accumulating `config.accumulation` batches. Cached: the optimizer is a
    static argument of `train_step`, so one object per config keeps one compiled step (e.g. for a compile check
    and the run after it)."""
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
    return np.asarray([epoch_permutation(total, seed, int(epoch))[offset] for epoch, offset in zip(epochs, offsets)])


@functools.lru_cache(maxsize=4)
def epoch_permutation(total: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the `total` examples in epoch `epoch` (read-only; cached, as a streamed loader asks for it once
    per example: `jaxprune.distill.streamed`)."""
    order = np.random.default_rng([seed, epoch]).permutation(total)
    order.setflags(write=False)
    return order


# Batches are padded to their longest example rounded up to this, not to max_length: chat-formatted GSM8K chains
# average ~140 tokens, and padding them all to 256 spent nearly half of every step on padding. A handful of lengths
# compile (each once, and once per machine with the persistent compilation cache).
LENGTH_BUCKET = 64


def padded_length(longest: int, max_length: int) -> int:
    """A batch's padded length: its longest example rounded up to `LENGTH_BUCKET`, at most `max_length`."""
    return min(max_length, max(1, -(-longest // LENGTH_BUCKET)) * LENGTH_BUCKET)


def batch_length(examples: Sequence[Example], indices: np.ndarray, max_length: int) -> int:
    """The padded length of the batch `indices` (every process computes the same from the global batch's indices)."""
    return padded_length(max(len(examples[index].tokens) for index in indices), max_length)


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


def masked_loss(model: Llama, tokens, loss_mask, valid, remat: str = "none") -> jax.Array:
    """Mean negative log-likelihood of the target tokens (`loss_mask`), each predicted from the tokens before it."""
    hidden, _, _ = model.hidden_states(tokens, positions_from_keep(valid), causal_mask(valid), remat=remat)
    log_probs = model.token_log_probs(hidden[:, :-1], tokens[:, 1:, None])[..., 0]
    weights = loss_mask[:, 1:].astype(jnp.float32)
    return -jnp.sum(log_probs * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class TrainState(NamedTuple):
    """What training carries from step to step: `frozen` base parameters (None for full fine-tuning), the
    `trainable` ones (all parameters, or the LoRA adapters) and the optimizer state."""

    frozen: Any
    trainable: Any
    opt_state: Any


def init_train_state(params, config: TrainConfig) -> tuple[TrainState, optax.GradientTransformation]:
    """The state before the first step, and the optimizer. Pure (no placement): works on concrete parameters and,
    through `jax.eval_shape`, on abstract ones."""
    optimizer = make_optimizer(config)
    if config.lora_rank:
        frozen, trainable = params, lora.init_adapters(params, config.lora_rank, config.lora_targets, config.seed)
    else:
        frozen, trainable = None, params
    return TrainState(frozen, trainable, optimizer.init(trainable)), optimizer


def train_state_shardings(state: TrainState, mesh: Mesh, rules=sharding.DEFAULT_RULES) -> TrainState:
    """A NamedSharding for every array of `state` (concrete or abstract), in a tree of the same structure.

    Parameters follow the logical-axis `rules`; LoRA adapters are replicated (they are small, and every shard of
    the kernel they adapt needs all of them). Optimizer state mirrors the trainable tree (Adam's moments, the
    accumulated gradients): each such subtree is sharded like the parameters, and the rest (step counts) is
    replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())

    # specs without trailing Nones, as a compiled step hands its outputs back (`P()`, not `P(None,)`): the state
    # a step returns then matches its inputs, and the next step needs no second compile
    def canonical(named):
        spec = tuple(named.spec)
        while spec and spec[-1] is None:
            spec = spec[:-1]
        return NamedSharding(mesh, PartitionSpec(*spec))

    def by_rules(params):  # state_shardings gives one sharding per Variable; spread it over the Variable's leaves
        return jax.tree.map(lambda named, variable: jax.tree.map(lambda _: canonical(named), variable),
                            sharding.state_shardings(params, mesh, rules), params)

    if state.frozen is None:  # full fine-tuning
        frozen, trainable = None, by_rules(state.trainable)
    else:
        frozen, trainable = by_rules(state.frozen), jax.tree.map(lambda _: replicated, state.trainable)
    params_structure = jax.tree.structure(state.trainable)

    def mirrors_params(node) -> bool:
        return jax.tree.structure(node) == params_structure

    opt_state = jax.tree.map(lambda node: trainable if mirrors_params(node) else replicated, state.opt_state,
                             is_leaf=mirrors_params)
    return TrainState(frozen, trainable, opt_state)


def _weights(frozen, trainable, lora_scale, dtype=None):
    """The model's parameters: the trainable ones, or the frozen base with LoRA adapters merged in; floating-point
    ones cast to `dtype` if given (the cast is differentiable, so gradients reach float32 masters)."""
    weights = trainable if frozen is None else lora.merge(frozen, trainable, lora_scale)
    if dtype is None:
        return weights
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, weights)


@functools.partial(jax.jit, static_argnames=("graphdef", "optimizer", "lora_scale", "compute_dtype", "remat",
                                             "rules"), donate_argnames=("trainable", "opt_state"))
def train_step(graphdef, frozen, trainable, opt_state, tokens, loss_mask, valid, *, optimizer, lora_scale,
               compute_dtype, remat, rules=sharding.DEFAULT_RULES):
    """One batch: `(trainable, opt_state, loss)` after a gradient step on the masked loss. `compute_dtype` and
    `remat` are `TrainConfig`'s strings; the inputs may be abstract (`train_step.lower(...)`).

    Under a mesh (`jax.set_mesh`) the new state is pinned to `train_state_shardings` by `rules`: left free, XLA
    may hand it back laid out otherwise (LoRA adapters split over `fsdp`), which defeats the buffer donation and
    compiles the step a second time for the new layout."""
    dtype = None if compute_dtype == "float32" else jnp.dtype(compute_dtype)

    def loss_fn(trainable):
        model = nnx.merge(graphdef, _weights(frozen, trainable, lora_scale, dtype))
        return masked_loss(model, tokens, loss_mask, valid, remat)

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    if sharding.under_mesh():
        pinned = train_state_shardings(TrainState(frozen, trainable, opt_state), jax.sharding.get_abstract_mesh(),
                                       rules)
        trainable, opt_state = jax.lax.with_sharding_constraint((trainable, opt_state),
                                                                (pinned.trainable, pinned.opt_state))
    return trainable, opt_state, loss


def train(model: Llama, examples: Sequence[Example], config: TrainConfig, checkpoint_dir: str, *, pad_id: int = 0,
          mesh: Mesh | None = None, rules=sharding.DEFAULT_RULES,
          on_step: Callable[[int, float], None] | None = None) -> Llama:
    """Trains `model` for `config.steps` batches, resuming from the newest checkpoint in `checkpoint_dir`.

    With a `mesh`, the state is placed by `train_state_shardings` and every batch is split over the batch axes
    (`data`, `fsdp`)."""
    import orbax.checkpoint as ocp

    if mesh is not None:
        split = sharding.batch_shards(mesh, rules)
        if config.batch_size % split:
            raise ValueError(f"batch_size={config.batch_size} does not split evenly over the mesh's {split} "
                             "batch shards")
    graphdef, params = nnx.split(model)
    state, optimizer = init_train_state(params, config)  # optax's zeros follow the parameters' placement
    if mesh is not None:
        state = jax.device_put(state, train_state_shardings(state, mesh, rules))
    frozen, trainable, opt_state = state
    # Absolute for orbax; a gs:// folder is passed through unchanged (orbax writes GCS itself).
    manager = ocp.CheckpointManager(files.absolute(checkpoint_dir), options=ocp.CheckpointManagerOptions(
        save_interval_steps=config.checkpoint_every, max_to_keep=2))
    # Streamed examples (`jaxprune.distill.streamed`) bring a grain loader, whose position each checkpoint keeps.
    loader = (examples.loader(config, pad_id, None if mesh is None else sharding.batch_sharding(mesh, 2, rules))
              if hasattr(examples, "loader") else None)
    step = 0
    if manager.latest_step() is not None:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore({"trainable": trainable, "opt_state": opt_state}),
            data=ocp.args.JsonRestore(), **({} if loader is None else loader.checkpoint_args(restore=True))))
        trainable, opt_state = restored.state["trainable"], restored.state["opt_state"]
        if restored.data["examples_seen"] != step * config.batch_size:
            raise ValueError(f"{checkpoint_dir}: checkpoint at step {step} was written with another batch size")
        if loader is not None:
            loader.check_position(step, checkpoint_dir)
    while step < config.steps:
        if loader is not None:
            batch = next(loader)
        else:
            indices = example_indices(step * config.batch_size, config.batch_size, len(examples), config.seed)
            length = batch_length(examples, indices, config.max_length)
            batch = (list(map(jnp.asarray, make_batch(examples, indices, length, pad_id))) if mesh is None
                     else _placed_batch(examples, indices, length, pad_id, sharding.batch_sharding(mesh, 2, rules)))
        with sharding.mesh_context(mesh):
            trainable, opt_state, loss = train_step(graphdef, frozen, trainable, opt_state, *batch,
                                                    optimizer=optimizer, lora_scale=config.lora_scale,
                                                    compute_dtype=config.compute_dtype, remat=config.remat,
                                                    rules=rules)
        step += 1
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"trainable": trainable, "opt_state": opt_state}),
            data=ocp.args.JsonSave({"step": step, "examples_seen": step * config.batch_size}),
            **({} if loader is None else loader.checkpoint_args(restore=False))), force=step == config.steps)
        if on_step is not None:
            on_step(step, float(loss))
    manager.wait_until_finished()
    manager.close()
    return nnx.merge(graphdef, _weights(frozen, trainable, config.lora_scale))
