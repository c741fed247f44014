"""How decoding picks each next token (greedy, temperature, top-p) and when a row stops."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens: `temperature` 0 is greedy; `top_p` < 1 samples from the nucleus."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def pick_tokens(logits: jax.Array, keys: jax.Array, steps: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Next token per row from `[batch, vocab]` float32 logits; row r samples with `fold_in(keys[r], steps[r])`."""
    if sampling.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / sampling.temperature
    if sampling.top_p < 1:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted entry
        cutoff = jnp.min(jnp.where(before < sampling.top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    step_keys = jax.vmap(jax.random.fold_in)(keys, steps)
    return jax.vmap(jax.random.categorical)(step_keys, logits).astype(jnp.int32)


def finished(token: jax.Array, steps: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Whether each row is done after emitting `token` as its `steps`-th token: a stop token, or the length cap."""
    stop_ids = jnp.asarray(sampling.stop_token_ids or (-1,), jnp.int32)
    return jnp.isin(token, stop_ids) | (steps >= sampling.max_new_tokens)
