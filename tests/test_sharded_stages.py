"""Stages with the weights split over 8 simulated devices (fsdp / tensor) equal one device: SmolLM2 pruning its own
demo chains, and decoding."""

import json
import math
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxprune import sharding
from jaxprune.checkpoints import load_gguf_model
from jaxprune.data.prompts import generation_prompt, split_chain
from jaxprune.generation import Decoder, SamplingConfig, generate
from jaxprune.pruning.greedy import PruneConfig, greedy_prune
from jaxprune.pruning.scoring import Scorer

DEMO_CHAINS = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "demo_chains.jsonl")
MESHES = ["fsdp=4,tensor=2", "data=2,fsdp=2,tensor=2"]


def assert_every_matrix_is_split(model, mesh):
    """Each device holds only part of every weight matrix (norms stay whole, by rule)."""
    for path, variable in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param),
                                                              is_leaf=lambda x: isinstance(x, nnx.Variable)):
        value = variable[...]
        shard = value.addressable_shards[0].data
        assert len(value.sharding.device_set) == mesh.size
        if value.ndim == 2:
            assert math.prod(shard.shape) < math.prod(value.shape), f"{jax.tree_util.keystr(path)} is not split"
        else:
            assert shard.shape == value.shape, f"{jax.tree_util.keystr(path)} (a norm) should be replicated"


@pytest.fixture(scope="module", params=MESHES)
def sharded_smollm2(request, smollm2_path):
    mesh = sharding.make_mesh(sharding.parse_mesh_shape(request.param))
    model = load_gguf_model(smollm2_path, mesh=mesh)
    assert_every_matrix_is_split(model, mesh)
    return model


def demo_splits(tokenizer, count=1):
    with open(DEMO_CHAINS, encoding="utf-8") as f:
        records = [json.loads(line) for line in f][:count]
    return [split_chain(tokenizer, r["question"], r["reasoning"], r["answer"], r["system"]) for r in records]


def test_pruning_with_split_weights_gives_the_orders_of_one_device(smollm2, sharded_smollm2):
    model, tokenizer = smollm2
    config = PruneConfig(keep_ratio=0.9)  # three steps: 8 simulated devices share two cores
    sharded_scorer = Scorer(sharded_smollm2, token_budget=1024)
    assert sharded_scorer.mesh is not None and sharded_scorer.row_multiple in (2, 4)  # rows over data x fsdp
    for split in demo_splits(tokenizer):
        single = greedy_prune(Scorer(model, token_budget=1024), split, config)
        spread = greedy_prune(sharded_scorer, split, config)
        assert spread.deletion_order == single.deletion_order
        for key in ("joint", "answer", "reasoning"):
            # 1e-4 nats plus 1e-5 of the value: a sharded matmul adds its partial sums in another order, and a chain's
            # log-likelihood (about -20 nats here) sums a hundred float32 token log-probabilities of 30 layers each
            np.testing.assert_allclose(spread.log_likelihoods[key], single.log_likelihoods[key], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("sharded_smollm2", MESHES[1:], indirect=True)  # all three axes; one mesh keeps CI short
def test_decoding_with_split_weights_gives_the_tokens_of_one_device(smollm2, sharded_smollm2):
    model, tokenizer = smollm2
    prompts = [list(generation_prompt(tokenizer, text)) for text in ("What is 12 + 30?", "Name a prime.")]
    decoder = Decoder(sharded_smollm2, SamplingConfig(max_new_tokens=10), batch_size=4, max_prompt_length=64)
    cache = decoder.state.cache[0].k  # [rows, kv_heads, slots, head_dim]: rows and heads spread over the devices
    assert decoder.mesh is not None and cache.addressable_shards[0].data.shape[0] < cache.shape[0]
    for sampling in (SamplingConfig(max_new_tokens=10), SamplingConfig(max_new_tokens=10, temperature=0.7)):
        assert generate(sharded_smollm2, prompts, sampling, seed=2) == generate(model, prompts, sampling, seed=2)
