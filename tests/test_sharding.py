"""Meshes, logical partition rules, and the forward pass sharded over 8 simulated CPU devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_torch_model
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxprune import sharding
from jaxprune.checkpoints import load_hf_model
from jaxprune.models import causal_mask, positions_from_keep


def test_eight_simulated_devices_are_available():
    assert jax.device_count() == 8, "tests must run with XLA_FLAGS=--xla_force_host_platform_device_count=8"


def test_mesh_takes_the_rest_on_the_free_axis():
    mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sharding.parse_mesh_shape("data=-1, tensor=4") == {"data": -1, "tensor": 4}
    assert sharding.make_mesh({"data": 2}).devices.tolist() == jax.devices()[:2]


@pytest.mark.parametrize("shape", [{"data": -1, "tensor": -1}, {"data": 3, "tensor": -1}, {"data": 16}])
def test_impossible_meshes_are_refused(shape):
    with pytest.raises(ValueError, match="mesh shape"):
        sharding.make_mesh(shape)


def test_malformed_mesh_flag_is_refused():
    with pytest.raises(ValueError, match="expected 'axis=size'"):
        sharding.parse_mesh_shape("data:2")


def test_logical_rules_map_axes_and_skip_what_does_not_divide():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert sharding.logical_to_spec(("embed", "mlp"), (64, 96), mesh) == P("fsdp", "tensor")
    assert sharding.logical_to_spec(("vocab", "embed"), (127, 64), mesh) == P(None, "fsdp")
    assert sharding.logical_to_spec(("norm",), (64,), mesh) == P(None)
    custom = (("embed", ("fsdp", "tensor")), ("mlp", "tensor"))
    assert sharding.logical_to_spec(("embed", "mlp"), (64, 96), mesh, custom) == P(("fsdp", "tensor"), None)


@pytest.mark.parametrize("mesh_shape", [{"data": 2, "fsdp": 2, "tensor": 2}, {"data": 1, "fsdp": 1, "tensor": 8}])
def test_sharded_forward_equals_single_device(tmp_path, mesh_shape):
    tiny_torch_model("llama3").save_pretrained(tmp_path)
    single = load_hf_model(str(tmp_path))
    mesh = sharding.make_mesh(mesh_shape)
    sharded = load_hf_model(str(tmp_path), mesh=mesh)

    q_kernel = sharded.layers[0].self_attn.q_proj.kernel[...]
    assert q_kernel.sharding.spec == sharding.logical_to_spec(("embed", "heads"), q_kernel.shape, mesh)
    assert len({shard.device for shard in q_kernel.addressable_shards}) == 8
    assert q_kernel.addressable_shards[0].data.shape != q_kernel.shape

    ids = np.random.RandomState(0).randint(0, 128, (4, 24))
    keep = np.ones(ids.shape, bool)
    keep[1, 5] = False
    args = (jnp.asarray(ids), positions_from_keep(jnp.asarray(keep)), causal_mask(jnp.asarray(keep)))
    expected = np.asarray(single(*args).logits)
    placed = [jax.device_put(a, sharding.batch_sharding(mesh, a.ndim)) for a in args]
    got = jax.jit(lambda m, *a: m(*a).logits)(sharded, *placed)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hub_id, billions", [("meta-llama/Llama-3.1-8B-Instruct", 8.03),
                                              ("Qwen/Qwen2.5-7B-Instruct", 7.62),
                                              ("mistralai/Mistral-7B-Instruct-v0.3", 7.25)])
@pytest.mark.parametrize("mesh_shape", ["fsdp=8", "fsdp=4,tensor=2", "data=2,fsdp=2,tensor=2"])
def test_partition_rules_spread_a_7_8b_model_over_eight_devices(hub_id, billions, mesh_shape):
    """At real sizes, from the shipped published config.json (jax.eval_shape: nothing allocated): the parameter
    count is the published one, every matrix is split, each device holds its share of the bfloat16 weights (only
    norms replicated), and the plan is printed."""
    from jaxprune.checkpoints.resolve import load_config
    from jaxprune.models.llama import abstract_model

    config = load_config(hub_id)  # no hub here: the file shipped in jaxprune/models/published
    name = hub_id.split("/")[1]
    state = nnx.state(abstract_model(config, jnp.bfloat16))
    mesh = sharding.make_mesh(sharding.parse_mesh_shape(mesh_shape))
    plan = sharding.bytes_per_device(state, mesh)
    assert plan["total"] / 2 / 1e9 == pytest.approx(billions, rel=0.01)
    weight_replicas = math.prod(size for axis, size in mesh.shape.items() if axis == "data")
    assert plan["replicated"] < 2e6  # norms only
    assert plan["sharded"] == pytest.approx(plan["total"] * weight_replicas / mesh.size, rel=0.01)
    print(f"{name} bfloat16 on {mesh_shape}: {plan['sharded'] / 2**30:.2f} GiB sharded + "
          f"{plan['replicated'] / 2**20:.2f} MiB replicated per device (of {plan['total'] / 2**30:.2f} GiB)")
