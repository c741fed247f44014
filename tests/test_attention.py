"""The attention kernels and the training loss's gradients, against independent references."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import tiny_torch_model
from flax import nnx

from jaxprune.models.attention import folded_attention, grouped_attention


def _plain_attention(q, k, v, mask):
    """Textbook attention, one query head at a time, keys repeated per head: `k`, `v` `[batch, kv_heads, keys, dim]`."""
    heads, kv_heads = q.shape[2], k.shape[1]
    outputs = []
    for head in range(heads):
        keys, values = k[:, head // (heads // kv_heads)], v[:, head // (heads // kv_heads)]
        scores = jnp.einsum("btd,bsd->bts", q[:, :, head], keys) / np.sqrt(q.shape[-1])
        probs = jax.nn.softmax(jnp.where(mask, scores, -1e30), axis=-1)
        outputs.append(jnp.einsum("bts,bsd->btd", probs, values))
    return jnp.stack(outputs, axis=2)


def test_folded_attention_values_and_gradients_equal_textbook_attention_with_grouped_heads():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32)
               for shape in ((2, 7, 6, 8), (2, 2, 7, 8), (2, 2, 7, 8)))
    mask = jnp.asarray(np.tril(np.ones((7, 7), bool))[None] & (rng.random((2, 1, 7)) > 0.3))
    mask = mask.at[1, 0].set(False)  # a fully masked query row (padding) must stay finite
    weights = jnp.asarray(rng.normal(size=(2, 7, 6, 8)), jnp.float32)

    def loss(attention):
        return lambda q, k, v: jnp.sum(attention(q, k, v, mask) * weights)

    got = jax.value_and_grad(loss(folded_attention), argnums=(0, 1, 2))(q, k, v)
    want = jax.value_and_grad(loss(_plain_attention), argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for ours, reference in zip(got[1], want[1]):
        np.testing.assert_allclose(ours, reference, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(folded_attention(q, k, v, mask), grouped_attention(q, k, v, mask)[0], atol=1e-6)


def test_training_loss_and_gradients_match_transformers_backward(tmp_path):
    import torch

    from jaxprune.checkpoints import load_hf_model
    from jaxprune.distill.train import masked_loss

    reference = tiny_torch_model("llama3", seed=3)
    reference.save_pretrained(tmp_path)
    ours = load_hf_model(str(tmp_path))
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 128, (2, 12))
    valid = np.ones((2, 12), bool)
    valid[1, 9:] = False  # right padding, as training batches have
    loss_mask = valid & (np.arange(12) >= 4)

    labels = torch.where(torch.tensor(loss_mask), torch.tensor(ids), torch.tensor(-100))
    reference.train()
    torch_loss = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(valid).long(), labels=labels).loss
    torch_loss.backward()

    graphdef, params = nnx.split(ours)
    loss, grads = jax.value_and_grad(lambda p: masked_loss(nnx.merge(graphdef, p), jnp.asarray(ids),
                                                           jnp.asarray(loss_mask), jnp.asarray(valid)))(params)
    np.testing.assert_allclose(float(loss), torch_loss.item(), rtol=1e-5)
    grads = nnx.merge(graphdef, grads)
    layer, torch_layer = grads.layers[1], reference.model.layers[1]
    pairs = [(grads.embed_tokens[...], reference.model.embed_tokens.weight.grad),
             (layer.self_attn.q_proj.kernel[...], torch_layer.self_attn.q_proj.weight.grad.T),
             (layer.self_attn.k_proj.kernel[...], torch_layer.self_attn.k_proj.weight.grad.T),
             (layer.mlp.down_proj.kernel[...], torch_layer.mlp.down_proj.weight.grad.T),
             (grads.layers[0].input_layernorm.scale[...], reference.model.layers[0].input_layernorm.weight.grad)]
    for ours_grad, torch_grad in pairs:
        np.testing.assert_allclose(np.asarray(ours_grad), torch_grad.numpy(), atol=1e-6, rtol=1e-4)
