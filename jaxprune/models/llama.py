"""The decoder (Llama 2/3.x, Qwen2/2.5, Qwen3, Mistral, SmolLM2, Gemma 3 text) as one Flax NNX module.

Every forward takes explicit position ids and a boolean attention mask `[batch, query, key]`, so deleting token i
is the same computation as masking i out of every query row and using positions `cumsum(keep) - 1`
(`positions_from_keep`, `causal_mask`). An optional KV cache (a tuple of per-layer `LayerCache`) is written at
`cache_index`; the mask then ranges over the cache slots. Sliding-window layers also drop keys whose position is a
window or more behind the query's (the variants themselves live in `jaxprune.models.layers`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.config import SLIDING_ATTENTION, ModelConfig
from jaxprune.models.layers import RESIDUAL, AttentionInputs, DecoderLayer, LayerCache, Linear, RMSNorm, param
from jaxprune.sharding import constrain, under_mesh

# What a decoder layer keeps for the backward pass (MaxText's `remat_policy`): "none" keeps every activation,
# "full" recomputes the whole layer from its input, "dots" keeps the matmul outputs and recomputes the cheap rest.
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}

# The compile check unrolls the vocabulary-chunk loop of `token_log_probs`, so that XLA's cost analysis (which counts
# a loop body once) sees every chunk; a run keeps the loop (the form `benchmarks/` measured on the CPU).
UNROLL_VOCAB_LOOP = False

KVCache = tuple[LayerCache, ...]


class ModelOutput(NamedTuple):
    logits: jax.Array                        # [batch, query, vocab], float32
    cache: KVCache | None                    # the updated cache, when one was passed
    attentions: tuple[jax.Array, ...] | None  # per layer [batch, heads, query, key] float32, when asked for


class LayerOptions(NamedTuple):
    """A forward's Python-valued settings (static under remat)."""

    cache_index: int = 0
    return_attention: bool = False


def _weights_after(x, layer: DecoderLayer):
    """The layer with weights that depend on `x` (an optimisation barrier, no computation). With weights split
    over devices XLA gathers each layer's weights where it likes, and left free it gathers every layer's up front
    and keeps them all: on a TPU v5e, 12 GiB of a decode step's 16 for Llama-3.1-8B over fsdp=8. Tied to the
    residual stream, a layer's weights are gathered when the layer before it has run."""
    graphdef, state = nnx.split(layer)
    x, state = jax.lax.optimization_barrier((x, state))
    return x, nnx.merge(graphdef, state)


def _call_layer(layer: DecoderLayer, x, inputs: AttentionInputs, cache, prefix, options: LayerOptions):
    return layer(x, inputs, cache=cache, prefix=prefix, cache_index=options.cache_index,
                 return_attention=options.return_attention)


def window_mask(mask: jax.Array, query_positions: jax.Array, key_positions: jax.Array, window: int) -> jax.Array:
    """`mask` with the keys at positions `window` or more behind the query's dropped (Hugging Face's sliding window:
    key position > query position - window)."""
    return mask & (query_positions[:, :, None] - key_positions[:, None, :] < window)


class Llama(nnx.Module):
    """A causal language model of the Llama family; `dtype` is the dtype of parameters and activations."""

    def __init__(self, config: ModelConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.embed_tokens = param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), dtype)
        self.layers = nnx.List([DecoderLayer(c, dtype, rngs) for _ in range(c.num_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype, offset=c.norm_offset)
        self.lm_head = None if c.tie_word_embeddings else Linear(
            c.hidden_size, c.vocab_size, ("embed", "vocab"), use_bias=False, dtype=dtype, rngs=rngs)

    def _layer_inputs(self, positions, attention_mask, key_positions, *, derive_keys: bool) -> dict:
        """Each layer type's AttentionInputs. A sliding layer needs every key's position once there are more keys
        than its window (with fewer, and slots never reused, no key can be a window behind); a plain forward's keys
        are its queries, a cache's or shared prefix's must be passed as `key_positions`."""
        c = self.config
        inputs = {}
        for layer_type in c.attention_types:
            mask = attention_mask
            if layer_type == SLIDING_ATTENTION and attention_mask.shape[-1] > c.sliding_window:
                if key_positions is None and not derive_keys:
                    raise ValueError(f"{attention_mask.shape[-1]} attention keys exceed the model's "
                                     f"sliding_window={c.sliding_window}: pass key_positions with a cache or prefix")
                mask = window_mask(mask, positions, positions if key_positions is None else key_positions,
                                   c.sliding_window)
            inputs[layer_type] = AttentionInputs(positions, mask, jnp.asarray(c.rope_inv_freq(layer_type)))
        return inputs

    def hidden_states(self, tokens, positions, attention_mask, *, cache: KVCache | None = None, cache_index=0,
                      prefix: KVCache | None = None, key_positions=None, return_attention: bool = False,
                      remat: str = "none"):
        """Final normalised hidden states `[batch, seq, hidden]`, the updated cache and (optionally) attentions.

        `prefix` (per layer `[1, kv_heads, slots, head_dim]`) is extra key/value context shared by all rows, e.g.
        the cache of a common prefix; the mask then covers `slots + seq` keys, the prefix first. `key_positions`
        (`[batch, keys]`, the position of every key the mask covers) is needed only by sliding-window layers
        reading more keys than their window through a cache or prefix. `remat` (a key of `REMAT_POLICIES`) sets
        what each layer keeps for a backward pass; it changes memory, not values.
        """
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {', '.join(REMAT_POLICIES)}, got {remat!r}")
        if cache is not None and prefix is not None:
            raise ValueError("pass either a cache to update or a shared prefix, not both")
        c = self.config
        inputs = self._layer_inputs(positions, attention_mask, key_positions,
                                    derive_keys=cache is None and prefix is None)
        x = jnp.take(self.embed_tokens[...], tokens, axis=0)
        if c.scale_embeddings:  # Gemma: the embedding times sqrt(hidden_size), rounded to the parameters' dtype
            x = x * jnp.asarray(math.sqrt(c.hidden_size), x.dtype)
        x = constrain(x, RESIDUAL)
        call = _call_layer
        options = LayerOptions(cache_index, return_attention)
        if REMAT_POLICIES[remat] is not None:  # the options (argument 5) are Python values, not traced
            call = nnx.remat(_call_layer, policy=REMAT_POLICIES[remat], static_argnums=(5,))
        new_cache, attentions = [], []
        for index, layer in enumerate(self.layers):
            if under_mesh():
                x, layer = _weights_after(x, layer)
            x, layer_cache, probs = call(layer, x, inputs[c.layer_type(index)],
                                         None if cache is None else cache[index],
                                         None if prefix is None else prefix[index], options)
            new_cache.append(layer_cache)
            attentions.append(probs)
        return (self.norm(x), None if cache is None else tuple(new_cache),
                tuple(attentions) if return_attention else None)

    def _softcap(self, logits: jax.Array) -> jax.Array:
        cap = self.config.final_logit_softcapping
        return logits if cap is None else cap * jnp.tanh(logits / cap)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Float32 vocabulary logits of final hidden states."""
        if self.lm_head is None:
            out = jnp.einsum("...d,vd->...v", hidden, self.embed_tokens[...], preferred_element_type=jnp.float32)
        else:
            out = jnp.einsum("...d,dv->...v", hidden, self.lm_head.kernel[...], preferred_element_type=jnp.float32)
        return self._softcap(out.astype(jnp.float32))

    def token_log_probs(self, hidden: jax.Array, targets: jax.Array, vocab_chunk: int = 4096) -> jax.Array:
        """`log p(target)` under each hidden state, float32, without materialising full-vocabulary logits.

        `hidden` is `[..., hidden_size]`, `targets` `[..., k]` (k token ids per hidden state). The normaliser is
        a running log-sum-exp over vocabulary chunks (much faster than one big reduction on XLA:CPU, and
        `[tokens, chunk]` instead of `[tokens, vocab]` memory).
        """
        weight = self.embed_tokens[...] if self.lm_head is None else self.lm_head.kernel[...]
        vocab_axis = 0 if self.lm_head is None else 1
        chunk = _largest_divisor_at_most(self.config.vocab_size, vocab_chunk)
        flat = hidden.reshape(-1, hidden.shape[-1])

        def chunk_logits(start):
            block = jax.lax.dynamic_slice_in_dim(weight, start, chunk, axis=vocab_axis)
            spec = "nd,vd->nv" if vocab_axis == 0 else "nd,dv->nv"
            return self._softcap(jnp.einsum(spec, flat, block, preferred_element_type=jnp.float32))

        def accumulate(index, carry):
            running_max, running_sum = carry
            logits = chunk_logits(index * chunk)
            new_max = jnp.maximum(running_max, logits.max(axis=-1))
            running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.exp(
                logits - new_max[:, None]).sum(axis=-1)
            return new_max, running_sum

        start = (jnp.full(flat.shape[:1], -jnp.inf, jnp.float32), jnp.zeros(flat.shape[:1], jnp.float32))
        running_max, running_sum = jax.lax.fori_loop(0, self.config.vocab_size // chunk, accumulate, start,
                                                     unroll=UNROLL_VOCAB_LOOP)
        log_normaliser = running_max + jnp.log(running_sum)
        flat_targets = targets.reshape(flat.shape[0], -1)
        rows = jnp.take(weight, flat_targets, axis=vocab_axis)  # [n, k, d] or [d, n, k]
        spec = "nd,nkd->nk" if vocab_axis == 0 else "nd,dnk->nk"
        target_logits = self._softcap(jnp.einsum(spec, flat, rows, preferred_element_type=jnp.float32))
        return (target_logits - log_normaliser[:, None]).reshape(targets.shape)

    def __call__(self, tokens, positions, attention_mask, *, cache: KVCache | None = None, cache_index=0,
                 key_positions=None, return_attention: bool = False) -> ModelOutput:
        hidden, cache, attentions = self.hidden_states(tokens, positions, attention_mask, cache=cache,
                                                       cache_index=cache_index, key_positions=key_positions,
                                                       return_attention=return_attention)
        return ModelOutput(self.logits(hidden), cache, attentions)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of `n` that is <= `limit` (chunks must tile the vocabulary exactly); `n` itself when
    the vocabulary only has small divisors, where one chunk beats many tiny ones."""
    divisor = max(d for d in range(1, min(n, limit) + 1) if n % d == 0)
    return divisor if divisor * 8 >= min(n, limit) else n


def init_cache(config: ModelConfig, batch: int, slots: int, dtype=jnp.float32) -> KVCache:
    """An empty KV cache with `slots` positions per sequence."""
    shape = (batch, config.num_kv_heads, slots, config.head_dim)
    return tuple(LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.num_layers))


def causal_mask(keep: jax.Array) -> jax.Array:
    """`[batch, seq, seq]` mask: query t sees keys s <= t that are kept (`keep` is `[batch, seq]` bool)."""
    length = keep.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    return causal[None] & keep[:, None, :].astype(bool)


def positions_from_keep(keep: jax.Array) -> jax.Array:
    """Position ids of a sequence with some tokens masked out: the kept tokens are numbered 0, 1, 2, ..."""
    return jnp.maximum(jnp.cumsum(keep.astype(jnp.int32), axis=-1) - 1, 0)


def forward(graphdef: nnx.GraphDef, params: nnx.State, tokens, positions, attention_mask, **kwargs) -> ModelOutput:
    """Pure forward of a split model, for use under `jax.jit` with the parameters as an argument."""
    return nnx.merge(graphdef, params)(tokens, positions, attention_mask, **kwargs)


def abstract_model(config: ModelConfig, dtype=jnp.float32) -> Llama:
    """The model's structure and shapes without allocating parameters (for loading and sharding plans)."""
    return nnx.eval_shape(lambda: Llama(config, dtype=dtype, rngs=nnx.Rngs(0)))
