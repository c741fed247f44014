"""LoRA adapters kept as their own pytree: a target kernel W `[in, out]` becomes W + (alpha / rank) * A @ B.

Only the adapters are trained; the base parameters stay frozen. `merge` gives the adapted weights as ordinary
parameters, which is both how the training forward sees them and what is exported (no adapter code in the student).
A starts random, B at zero, so training starts from the base model exactly.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _kernel_name(path) -> str | None:
    """`'layers/3/self_attn/q_proj'` for the path of a kernel parameter, else None."""
    names = [str(next(getattr(key, a) for a in ("key", "idx", "name") if hasattr(key, a))) for key in path]
    names = [n for n in names if n != "value"]  # the Variable's value attribute
    return "/".join(names[:-1]) if names and names[-1] == "kernel" else None


def init_adapters(params, rank: int, targets: Sequence[str] = DEFAULT_TARGETS, seed: int = 0) -> dict[str, Any]:
    """`{kernel name: {"a": [in, rank], "b": [rank, out]}}` for every kernel whose module is in `targets`."""
    adapters, key = {}, jax.random.key(seed)
    for path, kernel in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = _kernel_name(path)
        if name is None or name.rsplit("/", 1)[-1] not in targets:
            continue
        key, sub = jax.random.split(key)
        fan_in, fan_out = kernel.shape
        adapters[name] = {"a": jax.random.normal(sub, (fan_in, rank), kernel.dtype) / jnp.sqrt(fan_in),
                          "b": jnp.zeros((rank, fan_out), kernel.dtype)}
    if not adapters:
        raise ValueError(f"no kernel matches the LoRA targets {list(targets)}")
    return adapters


def merge(params, adapters: dict[str, Any], scale: float):
    """`params` with `scale * A @ B` added to every adapted kernel."""
    def adapted(path, leaf):
        adapter = adapters.get(_kernel_name(path))
        return leaf if adapter is None else leaf + scale * (adapter["a"] @ adapter["b"]).astype(leaf.dtype)
    return jax.tree_util.tree_map_with_path(adapted, params)
