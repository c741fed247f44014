"""Grouped-query attention over heads-major keys and values, with the queries of each KV head folded into one axis.

Keys and values are `[batch, kv_heads, keys, head_dim]` (the KV cache's layout); queries `[batch, query, heads,
head_dim]`. Folding a KV head's `group = heads / kv_heads` queries into one `[query * group]` axis makes both products
plain batched matrix products with no copy of the keys per query head. Two forms:

- `grouped_attention` returns the probabilities too (for analyses, and for one-token decoding, where it reads the cache
  as stored: XLA's fused attention transposes all of it every step);
- `folded_attention` returns only the output and has a hand-written backward pass (the standard softmax-attention
  gradient over the saved probabilities). On XLA:CPU autodiff of either form, or of `jax.nn.dot_product_attention`,
  spends most of its time re-laying out the score tensors; the explicit backward is all batched matrix products
  (`benchmarks/train_speed.py`: 43 against 79 ms a layer for 8 x 256 tokens of SmolLM2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Added to masked attention scores; finite so that a fully masked query row gives a uniform row, not NaN.
MASK_VALUE = -1e30


def _fold_queries(q: jax.Array, kv_heads: int) -> jax.Array:
    """`[batch, query, heads, head_dim]` -> `[batch, kv_heads, query * group, head_dim]`, scaled by head_dim^-1/2."""
    batch, length, heads, head_dim = q.shape
    group = heads // kv_heads
    q = q.reshape(batch, length, kv_heads, group, head_dim).transpose(0, 2, 1, 3, 4) * (head_dim ** -0.5)
    return q.reshape(batch, kv_heads, length * group, head_dim)


def _unfold_output(out: jax.Array, length: int) -> jax.Array:
    """`[batch, kv_heads, query * group, head_dim]` -> `[batch, query, heads, head_dim]`."""
    batch, kv_heads, folded, head_dim = out.shape
    group = folded // length
    out = out.reshape(batch, kv_heads, length, group, head_dim).transpose(0, 2, 1, 3, 4)
    return out.reshape(batch, length, kv_heads * group, head_dim)


def _fold_mask(mask: jax.Array, group: int) -> jax.Array:
    """`[batch, query, key]` -> `[batch, 1, query * group, key]` (every query head of a KV head sees the same keys)."""
    batch, length, keys = mask.shape
    mask = jnp.broadcast_to(mask[:, None, :, None, :], (batch, 1, length, group, keys))
    return mask.reshape(batch, 1, length * group, keys)


def _probabilities(q, k, mask):
    scores = jnp.einsum("bkqd,bksd->bkqs", q, k, preferred_element_type=jnp.float32)
    return jax.nn.softmax(jnp.where(mask, scores, MASK_VALUE), axis=-1)


def grouped_attention(q, k, v, mask):
    """Attention output `[batch, query, heads, head_dim]` and probabilities `[batch, heads, query, key]` (float32)."""
    batch, length, heads, _ = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    probs = _probabilities(_fold_queries(q, kv_heads), k, _fold_mask(mask, heads // kv_heads))
    out = _unfold_output(jnp.einsum("bkqs,bksd->bkqd", probs.astype(v.dtype), v), length)
    probs = probs.reshape(batch, kv_heads, length, heads // kv_heads, keys).transpose(0, 1, 3, 2, 4)
    return out, probs.reshape(batch, heads, length, keys)


@jax.custom_vjp
def _folded_core(q, k, v, mask):
    return _folded_core_forward(q, k, v, mask)[0]


def _folded_core_forward(q, k, v, mask):
    probs = _probabilities(q, k, mask)
    out = jnp.einsum("bkqs,bksd->bkqd", probs.astype(v.dtype), v)
    return out, (q, k, v, mask, probs, out)


def _folded_core_backward(saved, d_out):
    """dV = P^T dO; dS = P * (dO V^T - rowsum(dO * O)) where unmasked; dQ = dS K; dK = dS^T Q (in float32)."""
    q, k, v, mask, probs, out = saved
    d_out32 = d_out.astype(jnp.float32)
    d_v = jnp.einsum("bkqs,bkqd->bksd", probs, d_out32)
    d_probs = jnp.einsum("bkqd,bksd->bkqs", d_out32, v, preferred_element_type=jnp.float32)
    d_scores = probs * (d_probs - jnp.sum(d_out32 * out.astype(jnp.float32), axis=-1, keepdims=True))
    d_scores = jnp.where(mask, d_scores, 0.0)  # masked scores are constants (a fully masked row is uniform)
    d_q = jnp.einsum("bkqs,bksd->bkqd", d_scores, k, preferred_element_type=jnp.float32)
    d_k = jnp.einsum("bkqs,bkqd->bksd", d_scores, q, preferred_element_type=jnp.float32)
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), None


_folded_core.defvjp(_folded_core_forward, _folded_core_backward)


def folded_attention(q, k, v, mask):
    """Attention output `[batch, query, heads, head_dim]`, differentiable through a hand-written backward pass."""
    kv_heads = k.shape[1]
    out = _folded_core(_fold_queries(q, kv_heads), k, v, _fold_mask(mask, q.shape[2] // kv_heads))
    return _unfold_output(out, q.shape[1])
