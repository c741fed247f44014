"""The Llama-family decoder (Llama 2/3.x, Qwen2/2.5, Mistral, SmolLM2) as one Flax NNX module.

Every forward takes explicit position ids and a boolean attention mask `[batch, query, key]`, so deleting token i
is the same computation as masking i out of every query row and using positions `cumsum(keep) - 1`
(`positions_from_keep`, `causal_mask`). An optional KV cache (a tuple of per-layer `LayerCache`) is written at
`cache_index`; the mask then ranges over the cache slots. Parameters carry logical axis names (see
`jaxprune.sharding`), kernels are stored `[in, out]`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.attention import folded_attention, grouped_attention
from jaxprune.models.config import ModelConfig
from jaxprune.sharding import constrain, under_mesh

# What a decoder layer keeps for the backward pass (MaxText's `remat_policy`): "none" keeps every activation,
# "full" recomputes the whole layer from its input, "dots" keeps the matmul outputs and recomputes the cheap rest.
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}

# The compile check unrolls the vocabulary-chunk loop of `token_log_probs`, so that XLA's cost analysis (which counts
# a loop body once) sees every chunk; a run keeps the loop (the form `benchmarks/` measured on the CPU).
UNROLL_VOCAB_LOOP = False


# Logical axes of activations (mapped to mesh axes by `jaxprune.sharding`'s rules, applied only under a mesh):
# the residual stream is split over the batch, heads and the MLP's hidden units over `tensor`.
_RESIDUAL = ("activation_batch", "activation_length", "activation_embed")
_HEADS = ("activation_batch", "activation_length", "activation_heads", None)
_KV_HEADS = ("activation_batch", "activation_length", "activation_kv_heads", None)
_MLP = ("activation_batch", "activation_length", "activation_mlp")


class LayerCache(NamedTuple):
    """Keys and values of one layer for every cache slot: `[batch, kv_heads, slots, head_dim]` (heads before slots,
    so attending to the cache reads it as stored; the other order made XLA transpose the whole cache every step)."""

    k: jax.Array
    v: jax.Array


KVCache = tuple[LayerCache, ...]


class ModelOutput(NamedTuple):
    logits: jax.Array                        # [batch, query, vocab], float32
    cache: KVCache | None                    # the updated cache, when one was passed
    attentions: tuple[jax.Array, ...] | None  # per layer [batch, heads, query, key] float32, when asked for


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str, ...], dtype, init=None) -> nnx.Param:
    value = (init or nnx.initializers.normal(0.02))(rngs.params(), shape, dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def _ones_param(shape, axes, dtype) -> nnx.Param:
    return nnx.Param(jnp.ones(shape, dtype), out_sharding=axes, eager_sharding=False)


class Linear(nnx.Module):
    """`x @ kernel (+ bias)`, with logical axes `(in_axis, out_axis)` on the kernel."""

    def __init__(self, in_features: int, out_features: int, axes: tuple[str, str], *, use_bias: bool, dtype,
                 rngs: nnx.Rngs):
        self.kernel = _param(rngs, (in_features, out_features), axes, dtype)
        self.bias = _param(rngs, (out_features,), axes[1:], dtype, nnx.initializers.zeros) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        # One 2-D product: XLA:CPU runs the kernel's gradient of a [batch, seq, in] input (two contracting axes)
        # about 1.4x slower than of the same input flattened to [batch * seq, in].
        y = (x.reshape(-1, x.shape[-1]) @ self.kernel[...]).reshape(*x.shape[:-1], -1)
        return y + self.bias[...] if self.bias is not None else y


class RMSNorm(nnx.Module):
    """RMS normalisation computed in float32, scaled after casting back (as Hugging Face Llama does)."""

    def __init__(self, size: int, eps: float, dtype):
        self.scale = _ones_param((size,), ("norm",), dtype)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...] * x32.astype(x.dtype)


def _rotate_half(x: jax.Array) -> jax.Array:
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-second, first], axis=-1)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotary embedding, split-halves convention: `x` `[batch, seq, heads, head_dim]`, `positions` `[batch, seq]`."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [batch, seq, head_dim / 2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    return x * cos + _rotate_half(x) * sin


class Attention(nnx.Module):
    """Grouped-query self-attention with rotary positions and an optional KV cache."""

    def __init__(self, config: ModelConfig, dtype, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.q_proj = Linear(c.hidden_size, c.num_heads * c.head_dim, ("embed", "heads"),
                             use_bias=c.qkv_bias, dtype=dtype, rngs=rngs)
        self.k_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, ("embed", "kv_heads"),
                             use_bias=c.qkv_bias, dtype=dtype, rngs=rngs)
        self.v_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, ("embed", "kv_heads"),
                             use_bias=c.qkv_bias, dtype=dtype, rngs=rngs)
        self.o_proj = Linear(c.num_heads * c.head_dim, c.hidden_size, ("heads", "embed"),
                             use_bias=c.o_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x, positions, mask, inv_freq, cache: LayerCache | None, cache_index, return_attention,
                 prefix: LayerCache | None = None):
        c = self.config
        batch, length, _ = x.shape
        q = constrain(self.q_proj(x).reshape(batch, length, c.num_heads, c.head_dim), _HEADS)
        k = constrain(self.k_proj(x).reshape(batch, length, c.num_kv_heads, c.head_dim), _KV_HEADS)
        v = constrain(self.v_proj(x).reshape(batch, length, c.num_kv_heads, c.head_dim), _KV_HEADS)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        if cache is not None:  # keys/values come back heads-major: [batch, kv_heads, slots, head_dim]
            k, v = _write_cache(cache.k, k, cache_index), _write_cache(cache.v, v, cache_index)
            cache = LayerCache(k, v)
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # fused into the reader, or a cheap copy
        elif prefix is not None:  # keys/values shared by every row of the batch, placed before the row's own
            k = jnp.concatenate([_broadcast_prefix(prefix.k, batch).astype(k.dtype), k], 1)
            v = jnp.concatenate([_broadcast_prefix(prefix.v, batch).astype(v.dtype), v], 1)
        k, v = k.astype(x.dtype), v.astype(x.dtype)
        probs = None
        if return_attention or (cache is not None and length == 1):
            # Decoding reads the cache as stored (XLA's fused attention would transpose all of it every step).
            out, probs = grouped_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask)
        elif cache is None and prefix is None:  # training and plain forwards: a backward pass of batched products
            out = folded_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask)
        else:  # the fused XLA attention: about 1.3x faster on CPU than the explicit one for long suffix queries
            out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None])
        out = constrain(self.o_proj(out.reshape(batch, length, c.num_heads * c.head_dim)), _RESIDUAL)
        return out, cache, probs if return_attention else None


def _write_cache(cache: jax.Array, new: jax.Array, index) -> jax.Array:
    """Writes `new` `[batch, length, kv_heads, head_dim]` into `cache` at slot `index` (in place under jit)."""
    return jax.lax.dynamic_update_slice(cache, new.transpose(0, 2, 1, 3).astype(cache.dtype), (0, 0, index, 0))


def _broadcast_prefix(prefix: jax.Array, batch: int) -> jax.Array:
    """A shared `[1, kv_heads, slots, head_dim]` prefix as `[batch, slots, kv_heads, head_dim]` keys or values."""
    prefix = prefix.transpose(0, 2, 1, 3)
    return jnp.broadcast_to(prefix, (batch,) + prefix.shape[1:])


class MLP(nnx.Module):
    """SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`."""

    def __init__(self, config: ModelConfig, dtype, rngs: nnx.Rngs):
        c = config
        self.gate_proj = Linear(c.hidden_size, c.intermediate_size, ("embed", "mlp"),
                                use_bias=c.mlp_bias, dtype=dtype, rngs=rngs)
        self.up_proj = Linear(c.hidden_size, c.intermediate_size, ("embed", "mlp"),
                              use_bias=c.mlp_bias, dtype=dtype, rngs=rngs)
        self.down_proj = Linear(c.intermediate_size, c.hidden_size, ("mlp", "embed"),
                                use_bias=c.mlp_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        hidden = constrain(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x), _MLP)
        return constrain(self.down_proj(hidden), _RESIDUAL)


class DecoderLayer(nnx.Module):
    def __init__(self, config: ModelConfig, dtype, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.self_attn = Attention(config, dtype, rngs)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.mlp = MLP(config, dtype, rngs)

    def __call__(self, x, positions, mask, inv_freq, cache, cache_index, return_attention, prefix):
        attended, cache, probs = self.self_attn(self.input_layernorm(x), positions, mask, inv_freq, cache, cache_index,
                                                return_attention, prefix)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), cache, probs


def _weights_after(x, layer: DecoderLayer):
    """The layer with weights that depend on `x` (an optimisation barrier, no computation). With weights split
    over devices XLA gathers each layer's weights where it likes, and left free it gathers every layer's up front
    and keeps them all: on a TPU v5e, 12 GiB of a decode step's 16 for Llama-3.1-8B over fsdp=8. Tied to the
    residual stream, a layer's weights are gathered when the layer before it has run."""
    graphdef, state = nnx.split(layer)
    x, state = jax.lax.optimization_barrier((x, state))
    return x, nnx.merge(graphdef, state)


def _call_layer(layer: DecoderLayer, x, positions, mask, inv_freq, cache, prefix, flags):
    cache_index, return_attention = flags
    return layer(x, positions, mask, inv_freq, cache, cache_index, return_attention, prefix)


class Llama(nnx.Module):
    """A Llama-family causal language model; `dtype` is the dtype of parameters and activations."""

    def __init__(self, config: ModelConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.embed_tokens = _param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), dtype)
        self.layers = nnx.List([DecoderLayer(c, dtype, rngs) for _ in range(c.num_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype)
        self.lm_head = None if c.tie_word_embeddings else Linear(
            c.hidden_size, c.vocab_size, ("embed", "vocab"), use_bias=False, dtype=dtype, rngs=rngs)

    def hidden_states(self, tokens, positions, attention_mask, *, cache: KVCache | None = None, cache_index=0,
                      prefix: KVCache | None = None, return_attention: bool = False, remat: str = "none"):
        """Final normalised hidden states `[batch, seq, hidden]`, the updated cache and (optionally) attentions.

        `prefix` (per layer `[1, kv_heads, slots, head_dim]`) is extra key/value context shared by all rows, e.g.
        the cache of a common prefix; the mask then covers `slots + seq` keys, the prefix first. `remat` (a key of
        `REMAT_POLICIES`) sets what each layer keeps for a backward pass; it changes memory, not values.
        """
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {', '.join(REMAT_POLICIES)}, got {remat!r}")
        if cache is not None and prefix is not None:
            raise ValueError("pass either a cache to update or a shared prefix, not both")
        window = self.config.sliding_window
        key_length = attention_mask.shape[-1]
        if window is not None and key_length > window:
            raise ValueError(f"{key_length} attention keys exceed the model's sliding_window={window}, "
                             "which this implementation does not apply")
        inv_freq = jnp.asarray(self.config.rope_inv_freq())
        x = constrain(jnp.take(self.embed_tokens[...], tokens, axis=0), _RESIDUAL)
        call = _call_layer
        if REMAT_POLICIES[remat] is not None:  # the flags (argument 7) are Python values, not traced
            call = nnx.remat(_call_layer, policy=REMAT_POLICIES[remat], static_argnums=(7,))
        new_cache, attentions = [], []
        for index, layer in enumerate(self.layers):
            if under_mesh():
                x, layer = _weights_after(x, layer)
            x, layer_cache, probs = call(layer, x, positions, attention_mask, inv_freq,
                                         None if cache is None else cache[index],
                                         None if prefix is None else prefix[index], (cache_index, return_attention))
            new_cache.append(layer_cache)
            attentions.append(probs)
        return (self.norm(x), None if cache is None else tuple(new_cache),
                tuple(attentions) if return_attention else None)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Float32 vocabulary logits of final hidden states."""
        if self.lm_head is None:
            out = jnp.einsum("...d,vd->...v", hidden, self.embed_tokens[...], preferred_element_type=jnp.float32)
        else:
            out = jnp.einsum("...d,dv->...v", hidden, self.lm_head.kernel[...], preferred_element_type=jnp.float32)
        return out.astype(jnp.float32)

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
            return jnp.einsum(spec, flat, block, preferred_element_type=jnp.float32)

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
        target_logits = jnp.einsum(spec, flat, rows, preferred_element_type=jnp.float32)
        return (target_logits - log_normaliser[:, None]).reshape(targets.shape)

    def __call__(self, tokens, positions, attention_mask, *, cache: KVCache | None = None, cache_index=0,
                 return_attention: bool = False) -> ModelOutput:
        hidden, cache, attentions = self.hidden_states(tokens, positions, attention_mask, cache=cache,
                                                       cache_index=cache_index, return_attention=return_attention)
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
