"""The forward pass: deletion as masking, KV-cache decoding, attention probabilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_torch_model
from flax import nnx

from jaxprune.models import (Llama, ModelConfig, causal_mask, init_cache, load_hf_config, positions_from_keep)

CONFIG = ModelConfig(model_type="llama", vocab_size=97, hidden_size=48, intermediate_size=80, num_layers=3,
                     num_heads=6, num_kv_heads=2, head_dim=8, rope_theta=1000.0)


@pytest.fixture(scope="module")
def model():
    return Llama(CONFIG, rngs=nnx.Rngs(3))


def full_forward(model, ids):
    ids = jnp.asarray(ids)
    keep = jnp.ones(ids.shape, bool)
    return np.asarray(model(ids, positions_from_keep(keep), causal_mask(keep)).logits)


@pytest.mark.parametrize("deleted", [(0,), (5,), (17,), (3, 4, 11)])
def test_masking_a_token_equals_removing_it(model, deleted):
    ids = np.random.RandomState(0).randint(0, CONFIG.vocab_size, (1, 18))
    keep = np.ones(ids.shape, bool)
    keep[0, list(deleted)] = False
    masked = model(jnp.asarray(ids), positions_from_keep(jnp.asarray(keep)), causal_mask(jnp.asarray(keep))).logits
    removed = full_forward(model, ids[:, keep[0]])
    np.testing.assert_allclose(np.asarray(masked)[keep], removed[0], atol=1e-5, rtol=0)


def test_masking_equals_removing_on_smollm2(smollm2):
    model, tokenizer = smollm2
    ids = np.asarray([tokenizer("Natalia sold 48 clips in April and half as many in May. 48 / 2 = 24.").input_ids])
    keep = np.ones(ids.shape, bool)
    keep[0, 7] = False
    masked = model(jnp.asarray(ids), positions_from_keep(jnp.asarray(keep)), causal_mask(jnp.asarray(keep))).logits
    np.testing.assert_allclose(np.asarray(masked)[keep], full_forward(model, ids[:, keep[0]])[0], atol=1e-4, rtol=0)


def test_kv_cache_decoding_equals_full_forward(model):
    ids = np.random.RandomState(1).randint(0, CONFIG.vocab_size, (2, 20))
    expected = full_forward(model, ids)
    prefill, slots = 7, 24
    cache = init_cache(CONFIG, batch=2, slots=slots)
    slot_ids = jnp.arange(slots)
    mask = slot_ids[None, None, :] <= jnp.arange(prefill)[None, :, None]
    positions = jnp.broadcast_to(jnp.arange(prefill), (2, prefill))
    out = model(jnp.asarray(ids[:, :prefill]), positions, jnp.broadcast_to(mask, (2, prefill, slots)), cache=cache)
    np.testing.assert_allclose(np.asarray(out.logits), expected[:, :prefill], atol=1e-5, rtol=0)
    cache = out.cache
    for t in range(prefill, ids.shape[1]):
        mask = jnp.broadcast_to(slot_ids <= t, (2, 1, slots))
        out = model(jnp.asarray(ids[:, t:t + 1]), jnp.full((2, 1), t), mask, cache=cache, cache_index=t)
        cache = out.cache
        np.testing.assert_allclose(np.asarray(out.logits)[:, 0], expected[:, t], atol=1e-5, rtol=0)


def test_decoding_under_jit_does_not_retrace_per_position(model):
    graphdef, params = nnx.split(model)
    traces = []

    @jax.jit
    def step(params, token, position, mask, cache, index):
        traces.append(1)
        return nnx.merge(graphdef, params)(token, position, mask, cache=cache, cache_index=index).cache

    cache = init_cache(CONFIG, batch=1, slots=8)
    for t in range(4):
        cache = step(params, jnp.ones((1, 1), jnp.int32), jnp.full((1, 1), t), jnp.ones((1, 1, 8), bool), cache, t)
    assert len(traces) == 1


def test_attention_probabilities_match_transformers_eager(tmp_path):
    import torch

    from jaxprune.checkpoints import load_hf_model

    reference = tiny_torch_model("llama3")
    reference.save_pretrained(tmp_path)
    ours = load_hf_model(str(tmp_path))
    assert load_hf_config(str(tmp_path)).num_kv_heads == 2
    ids = np.random.RandomState(2).randint(0, 128, (2, 15))
    reference.config._attn_implementation = "eager"
    with torch.no_grad():
        expected = reference(torch.tensor(ids), output_attentions=True).attentions
    keep = jnp.ones(ids.shape, bool)
    got = ours(jnp.asarray(ids), positions_from_keep(keep), causal_mask(keep), return_attention=True).attentions
    assert len(got) == len(expected) == 2
    for ours_layer, torch_layer in zip(got, expected):
        np.testing.assert_allclose(np.asarray(ours_layer), torch_layer.numpy(), atol=1e-5, rtol=0)


def test_attention_gives_no_weight_to_a_masked_token(model):
    ids = jnp.asarray(np.random.RandomState(3).randint(0, CONFIG.vocab_size, (1, 10)))
    keep = jnp.ones((1, 10), bool).at[0, 4].set(False)
    attentions = model(ids, positions_from_keep(keep), causal_mask(keep), return_attention=True).attentions
    for layer in attentions:
        layer = np.asarray(layer)
        assert np.all(layer[..., 4] == 0)
        np.testing.assert_allclose(layer.sum(-1), 1.0, atol=1e-5)
