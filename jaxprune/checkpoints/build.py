"""Builds a model from named host tensors, placing each one on a device or straight into its shards on a mesh."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxprune import sharding as sharding_lib
from jaxprune.models.config import ModelConfig
from jaxprune.models.llama import Llama, abstract_model

ParamPath = tuple  # e.g. ("layers", 3, "self_attn", "q_proj", "kernel")


class CheckpointError(ValueError):
    """A checkpoint we refuse to load or write; the message names the file and the problem."""


def param_path(key_path) -> ParamPath:
    """Turns a jax key path into a tuple of attribute names and layer indices."""
    names = []
    for key in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                names.append(getattr(key, attr))
                break
    return tuple(names)


def build_model(config: ModelConfig, tensor_for: Callable[[ParamPath], np.ndarray], *, dtype=jnp.float32,
                mesh: Mesh | None = None, rules=sharding_lib.DEFAULT_RULES, source: str = "checkpoint") -> Llama:
    """A Llama whose parameters come from `tensor_for(path)` (host arrays in our `[in, out]` layout).

    Shapes are checked before anything is placed. With a mesh, each parameter is created directly as a sharded
    array (each process materialises only its own shards), so a model that does not fit one device still loads.
    """
    graphdef, abstract_state = nnx.split(abstract_model(config, dtype))
    shardings = sharding_lib.state_shardings(abstract_state, mesh, rules) if mesh is not None else None

    def load(key_path, variable: nnx.Variable):
        path = param_path(key_path)
        host = tensor_for(path)
        if tuple(host.shape) != tuple(variable.shape):
            raise CheckpointError(f"{source}: tensor for {'.'.join(map(str, path))} has shape {tuple(host.shape)}, "
                                  f"expected {tuple(variable.shape)}")
        host = np.asarray(host).astype(dtype)
        if shardings is None:
            return variable.replace(jnp.asarray(host))
        target = _at_path(shardings, path)
        return variable.replace(jax.make_array_from_callback(host.shape, target, lambda index: host[index]))

    state = jax.tree_util.tree_map_with_path(load, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, state)


def _at_path(tree, path: ParamPath):
    for name in path:
        tree = tree[name]
    return tree


def _variables_with_paths(state: nnx.State) -> list[tuple[ParamPath, nnx.Variable]]:
    leaves = jax.tree_util.tree_leaves_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return [(param_path(key_path), variable) for key_path, variable in leaves]


def host_tensors(model: Llama) -> dict[ParamPath, np.ndarray]:
    """Every parameter of `model` as a host array, gathered across processes if it is sharded over hosts."""
    from jax.experimental import multihost_utils

    tensors = {}
    for path, variable in _variables_with_paths(nnx.state(model, nnx.Param)):
        value = variable[...]
        if not value.is_fully_addressable:
            value = multihost_utils.process_allgather(value, tiled=True)
        tensors[path] = np.asarray(jax.device_get(value))
    return tensors
