"""The decoder block and its parts (projections, norms, rotary embedding, attention, MLP), for every configured variant.

A layer reads the residual stream and one `AttentionInputs` (positions, the mask of its layer type, its rotary
frequencies), so a sliding-window layer and a global one differ only in what they are handed. Parameters carry
logical axis names (see `jaxprune.sharding`); kernels are stored `[in, out]`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.attention import folded_attention, grouped_attention
from jaxprune.models.config import ModelConfig
from jaxprune.sharding import constrain

# Logical axes of activations (mapped to mesh axes by `jaxprune.sharding`'s rules, applied only under a mesh):
# the residual stream is split over the batch, heads and the MLP's hidden units over `tensor`.
RESIDUAL = ("activation_batch", "activation_length", "activation_embed")
_HEADS = ("activation_batch", "activation_length", "activation_heads", None)
_KV_HEADS = ("activation_batch", "activation_length", "activation_kv_heads", None)
_MLP = ("activation_batch", "activation_length", "activation_mlp")
_ACTIVATIONS = {"silu": jax.nn.silu, "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True)}


class LayerCache(NamedTuple):
    """Keys and values of one layer for every cache slot: `[batch, kv_heads, slots, head_dim]` (heads before slots,
    so attending to the cache reads it as stored; the other order made XLA transpose the whole cache every step)."""

    k: jax.Array
    v: jax.Array


class AttentionInputs(NamedTuple):
    """What a layer reads besides the residual stream; one per layer type in a forward."""

    positions: jax.Array  # [batch, query] position ids
    mask: jax.Array       # [batch, query, key] bool, the layer type's window applied
    inv_freq: jax.Array   # [head_dim / 2] rotary frequencies of the layer type


def param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str, ...], dtype, init=None) -> nnx.Param:
    value = (init or nnx.initializers.normal(0.02))(rngs.params(), shape, dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class Linear(nnx.Module):
    """`x @ kernel (+ bias)`, with logical axes `(in_axis, out_axis)` on the kernel."""

    def __init__(self, in_features: int, out_features: int, axes: tuple[str, str], *, use_bias: bool, dtype,
                 rngs: nnx.Rngs):
        self.kernel = param(rngs, (in_features, out_features), axes, dtype)
        self.bias = param(rngs, (out_features,), axes[1:], dtype, nnx.initializers.zeros) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        # One 2-D product: XLA:CPU runs the kernel's gradient of a [batch, seq, in] input (two contracting axes)
        # about 1.4x slower than of the same input flattened to [batch * seq, in].
        y = (x.reshape(-1, x.shape[-1]) @ self.kernel[...]).reshape(*x.shape[:-1], -1)
        return y + self.bias[...] if self.bias is not None else y


class RMSNorm(nnx.Module):
    """RMS normalisation in float32. Llama scales after casting back; Gemma (`offset`) scales by `1 + weight` in
    float32 and casts last, its stored weight starting at zero: each as its Hugging Face model does."""

    def __init__(self, size: int, eps: float, dtype, *, offset: bool = False):
        self.scale = nnx.Param((jnp.zeros if offset else jnp.ones)((size,), dtype), out_sharding=("norm",),
                               eager_sharding=False)
        self.eps = eps
        self.offset = offset

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.offset:
            return (x32 * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)
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
    """Grouped-query self-attention with rotary positions, optional q/k norms and an optional KV cache."""

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
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype, offset=c.norm_offset)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype, offset=c.norm_offset)

    def __call__(self, x, inputs: AttentionInputs, *, cache: LayerCache | None = None, cache_index=0,
                 prefix: LayerCache | None = None, return_attention: bool = False):
        c = self.config
        batch, length, _ = x.shape
        q = constrain(self.q_proj(x).reshape(batch, length, c.num_heads, c.head_dim), _HEADS)
        k = constrain(self.k_proj(x).reshape(batch, length, c.num_kv_heads, c.head_dim), _KV_HEADS)
        v = constrain(self.v_proj(x).reshape(batch, length, c.num_kv_heads, c.head_dim), _KV_HEADS)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, inputs.positions, inputs.inv_freq), apply_rope(k, inputs.positions, inputs.inv_freq)
        if c.query_pre_attn_scalar is not None and c.query_pre_attn_scalar != c.head_dim:
            # The kernels below scale scores by head_dim ** -0.5; Gemma asks for query_pre_attn_scalar ** -0.5.
            q = q * jnp.asarray(math.sqrt(c.head_dim / c.query_pre_attn_scalar), q.dtype)
        mask = inputs.mask
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
        out = constrain(self.o_proj(out.reshape(batch, length, c.num_heads * c.head_dim)), RESIDUAL)
        return out, cache, probs if return_attention else None


def _write_cache(cache: jax.Array, new: jax.Array, index) -> jax.Array:
    """Writes `new` `[batch, length, kv_heads, head_dim]` into `cache` at slot `index` (in place under jit)."""
    return jax.lax.dynamic_update_slice(cache, new.transpose(0, 2, 1, 3).astype(cache.dtype), (0, 0, index, 0))


def _broadcast_prefix(prefix: jax.Array, batch: int) -> jax.Array:
    """A shared `[1, kv_heads, slots, head_dim]` prefix as `[batch, slots, kv_heads, head_dim]` keys or values."""
    prefix = prefix.transpose(0, 2, 1, 3)
    return jnp.broadcast_to(prefix, (batch,) + prefix.shape[1:])


class MLP(nnx.Module):
    """Gated feed-forward: `down(act(gate(x)) * up(x))` (SwiGLU; GeGLU with Gemma's tanh GELU)."""

    def __init__(self, config: ModelConfig, dtype, rngs: nnx.Rngs):
        c = config
        self.gate_proj = Linear(c.hidden_size, c.intermediate_size, ("embed", "mlp"),
                                use_bias=c.mlp_bias, dtype=dtype, rngs=rngs)
        self.up_proj = Linear(c.hidden_size, c.intermediate_size, ("embed", "mlp"),
                              use_bias=c.mlp_bias, dtype=dtype, rngs=rngs)
        self.down_proj = Linear(c.intermediate_size, c.hidden_size, ("mlp", "embed"),
                                use_bias=c.mlp_bias, dtype=dtype, rngs=rngs)
        self.activation = c.hidden_act

    def __call__(self, x):
        hidden = constrain(_ACTIVATIONS[self.activation](self.gate_proj(x)) * self.up_proj(x), _MLP)
        return constrain(self.down_proj(hidden), RESIDUAL)


class DecoderLayer(nnx.Module):
    """Pre-norm attention and MLP with residual adds; with `sandwich_norms` (Gemma 3) each sublayer's output is
    normalised too, before the add. The norms keep their Hugging Face names: Llama's `post_attention_layernorm` is the
    MLP's input norm, Gemma's the attention's output norm (its MLP has `pre_/post_feedforward_layernorm`)."""

    def __init__(self, config: ModelConfig, dtype, rngs: nnx.Rngs):
        c = config
        self.sandwich = c.sandwich_norms

        def norm():
            return RMSNorm(c.hidden_size, c.rms_norm_eps, dtype, offset=c.norm_offset)

        self.input_layernorm = norm()
        self.self_attn = Attention(c, dtype, rngs)
        self.post_attention_layernorm = norm()
        if self.sandwich:
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()
        self.mlp = MLP(c, dtype, rngs)

    def __call__(self, x, inputs: AttentionInputs, *, cache: LayerCache | None = None, cache_index=0,
                 prefix: LayerCache | None = None, return_attention: bool = False):
        attended, cache, probs = self.self_attn(self.input_layernorm(x), inputs, cache=cache, cache_index=cache_index,
                                                prefix=prefix, return_attention=return_attention)
        if self.sandwich:
            x = x + self.post_attention_layernorm(attended)
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x))), cache, probs
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), cache, probs
