"""Meshes, logical partition rules, and the forward pass sharded over 8 simulated CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_torch_model
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
