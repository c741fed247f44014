"""Batched decoding with the KV cache: greedy or temperature / top-p sampling, stopping at EOS or end-of-turn.

Prompts are left-padded into a fixed buffer (length rounded up to `PROMPT_BUCKET`), so prefill and the whole decode
loop (`lax.while_loop`) compile once per bucket and batch size, never per token.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models.llama import Llama, init_cache, positions_from_keep

PROMPT_BUCKET = 32


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


def _pick(logits: jax.Array, rng: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Next token per row from `[batch, vocab]` float32 logits."""
    if sampling.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / sampling.temperature
    if sampling.top_p < 1:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted entry
        cutoff = jnp.min(jnp.where(before < sampling.top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling"))
def _generate(graphdef, params, tokens, valid, rng, *, sampling: SamplingConfig):
    """Prefill `tokens` `[batch, prompt]` (left-padded, `valid` marks real tokens), then decode into a fixed buffer."""
    model: Llama = nnx.merge(graphdef, params)
    batch, prompt_length = tokens.shape
    slots = prompt_length + sampling.max_new_tokens
    slot_ids = jnp.arange(slots)
    key_valid = jnp.zeros((batch, slots), bool).at[:, :prompt_length].set(valid)
    dtype = model.embed_tokens[...].dtype
    cache = init_cache(model.config, batch, slots, dtype)
    prefill_mask = (slot_ids[None, None, :] <= jnp.arange(prompt_length)[None, :, None]) & key_valid[:, None, :]
    positions = positions_from_keep(valid)
    hidden, cache, _ = model.hidden_states(tokens, positions, prefill_mask, cache=cache, cache_index=0)
    stop_ids = jnp.asarray(sampling.stop_token_ids or (-1,), jnp.int32)

    rng, step_rng = jax.random.split(rng)
    first = _pick(model.logits(hidden[:, -1]), step_rng, sampling)
    out = jnp.zeros((batch, sampling.max_new_tokens), jnp.int32).at[:, 0].set(first)
    state = (cache, key_valid, first, positions[:, -1] + 1, jnp.int32(1), jnp.isin(first, stop_ids), out, rng)

    def not_finished(state):
        *_, step, done, _, _ = state
        return (step < sampling.max_new_tokens) & ~jnp.all(done)

    def decode_step(state):
        cache, key_valid, last, position, step, done, out, rng = state
        slot = prompt_length + step - 1
        key_valid = key_valid.at[:, slot].set(True)
        hidden, cache, _ = model.hidden_states(last[:, None], position[:, None], key_valid[:, None, :],
                                               cache=cache, cache_index=slot)
        rng, step_rng = jax.random.split(rng)
        token = _pick(model.logits(hidden[:, 0]), step_rng, sampling)
        token = jnp.where(done, 0, token)
        out = out.at[:, step].set(token)
        return cache, key_valid, token, position + 1, step + 1, done | jnp.isin(token, stop_ids), out, rng

    *_, steps, done, out, _ = jax.lax.while_loop(not_finished, decode_step, state)
    return out, steps


def generate(model: Llama, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *, seed: int = 0,
             pad_id: int = 0) -> list[list[int]]:
    """Continues each prompt; a continuation ends with its stop token when it stopped before `max_new_tokens`."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs at least one token")
    length = -(-max(len(p) for p in prompts) // PROMPT_BUCKET) * PROMPT_BUCKET
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    valid = np.zeros((len(prompts), length), bool)
    for row, prompt in enumerate(prompts):
        tokens[row, length - len(prompt):] = prompt
        valid[row, length - len(prompt):] = True
    graphdef, params = nnx.split(model)
    out, steps = _generate(graphdef, params, jnp.asarray(tokens), jnp.asarray(valid), jax.random.key(seed),
                           sampling=sampling)
    out = np.asarray(out)[:, : int(steps)]
    stops = set(sampling.stop_token_ids)
    results = []
    for row in out.tolist():
        end = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
        results.append(row[:end])
    return results
