"""Device meshes and the rules that map logical parameter axes onto them.

Parameters are annotated with logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `mlp`, `norm`); a rule table
maps each name to mesh axes (`data`, `fsdp`, `tensor`). Rules are data: experiments pass their own table.
"""

from __future__ import annotations

import contextlib
import math
from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None for replicated)
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    # activations (MaxText's split): rows over the batch axes, heads and MLP units over `tensor`, the residual
    # stream's features whole (sharding them too would add an all-gather before every matmul)
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
)


def parse_mesh_shape(text: str) -> dict[str, int]:
    """Parses a flag value such as `data=-1,fsdp=1,tensor=2` into an ordered axis -> size dict."""
    shape: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, size = item.partition("=")
        if not sep or not size.strip().lstrip("-").isdigit():
            raise ValueError(f"mesh shape {text!r}: expected 'axis=size' items, got {item!r}")
        shape[name.strip()] = int(size)
    return shape


def _resolve(shape: Mapping[str, int], devices: int) -> dict[str, int]:
    """Axis sizes with the one -1 (if any) taking the devices the others leave."""
    sizes = dict(shape)
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"mesh shape {sizes}: at most one axis may be -1")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if devices % fixed:
            raise ValueError(f"mesh shape {sizes}: {devices} devices are not divisible by {fixed}")
        sizes[free[0]] = devices // fixed
    return sizes


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None,
              across_slices: Mapping[str, int] | None = None) -> Mesh:
    """A mesh with axes in `shape` order over the first devices of `devices` (default: all); one size may be -1
    to take all the rest.

    With `across_slices` (axis -> size over the slower data-centre network), `shape` is the mesh within one slice
    (or one host, where the devices do not form that many slices) and each axis spans both: e.g. `fsdp=-1` within slices and
    `data=2` across two slices keeps the weight all-gathers inside a slice."""
    devices = list(jax.devices() if devices is None else devices)
    if across_slices:
        unknown = set(across_slices) - set(shape)
        if unknown:
            raise ValueError(f"across-slice axes {sorted(unknown)} are not axes of the mesh {dict(shape)}")
        slices = math.prod(across_slices.values())
        if len(devices) % slices:
            raise ValueError(f"{len(devices)} devices do not split into {slices} slices")
        inner = _resolve(shape, len(devices) // slices)
        outer = [across_slices.get(name, 1) for name in inner]
        by_process = len({getattr(device, "slice_index", 0) for device in devices}) != slices  # no real slices
        grid = mesh_utils.create_hybrid_device_mesh(list(inner.values()), outer, devices, process_is_granule=by_process)
        return Mesh(grid, tuple(inner), axis_types=(AxisType.Auto,) * len(inner))
    sizes = _resolve(shape, len(devices))
    needed = math.prod(sizes.values())
    if needed > len(devices):
        raise ValueError(f"mesh shape {sizes} needs {needed} devices, {len(devices)} available")
    axis_types = (AxisType.Auto,) * len(sizes)
    try:  # laid out along the physical interconnect where JAX knows it
        return jax.make_mesh(tuple(sizes.values()), tuple(sizes), axis_types=axis_types, devices=devices[:needed])
    except AssertionError:  # e.g. TPU v4 without megacore (a device per TensorCore): JAX has no layout; keep order
        grid = np.asarray(devices[:needed], dtype=object).reshape(tuple(sizes.values()))
        return Mesh(grid, tuple(sizes), axis_types=axis_types)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=DEFAULT_RULES) -> PartitionSpec:
    """Maps logical axes to a PartitionSpec, leaving a dimension replicated where its size does not divide."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(logical_axes, shape):
        targets = table.get(name) if name is not None else None
        targets = (targets,) if isinstance(targets, str) else tuple(targets or ())
        targets = tuple(a for a in targets if a in mesh.shape and mesh.shape[a] > 1 and a not in used)
        if targets and size % math.prod(mesh.shape[a] for a in targets) == 0:
            used.update(targets)
            spec.append(targets[0] if len(targets) == 1 else targets)
        else:
            spec.append(None)
    return PartitionSpec(*spec)


def under_mesh() -> bool:
    """Whether the code being traced runs on a mesh of several devices (`jax.set_mesh`)."""
    mesh = jax.sharding.get_abstract_mesh()
    return not mesh.empty and mesh.size > 1


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules=DEFAULT_RULES) -> jax.Array:
    """`x` constrained to the sharding its logical axes map to on the mesh in context (`jax.set_mesh`); unchanged
    outside one. Propagation alone may leave an activation replicated (or split over the wrong axis) after a
    reshape or a gather; the constraint pins what every layer hands to the next."""
    if not under_mesh():
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, x.shape, jax.sharding.get_abstract_mesh(),
                                                               rules))


def _logical_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
    return tuple(variable.get_metadata().get("out_sharding") or (None,) * len(variable.shape))


def state_shardings(state: nnx.State, mesh: Mesh, rules=DEFAULT_RULES):
    """A NamedSharding for every variable of `state` (concrete or abstract), following the logical rules."""
    def sharding(variable: nnx.Variable) -> NamedSharding:
        return NamedSharding(mesh, logical_to_spec(_logical_axes(variable), variable.shape, mesh, rules))
    return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
    """Sharding for an input whose leading axis is the batch."""
    batch_axes = dict(rules).get("batch")
    batch_axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes or ())
    batch_axes = tuple(a for a in batch_axes if a in mesh.shape)
    return NamedSharding(mesh, PartitionSpec(batch_axes or None, *([None] * (ndim - 1))))


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None], shape: Sequence[int],
                     rules=DEFAULT_RULES) -> NamedSharding:
    """The NamedSharding the rules give an array with these logical axes (e.g. a KV cache's batch and heads)."""
    return NamedSharding(mesh, logical_to_spec(logical_axes, shape, mesh, rules))


def batch_shards(mesh: Mesh, rules=DEFAULT_RULES) -> int:
    """How many ways a batch is split on `mesh` (the product of the batch axes' sizes): batch sizes and packed
    candidate rows are rounded up to a multiple of it."""
    spec = batch_sharding(mesh, 1, rules).spec[0]
    return math.prod(mesh.shape[axis] for axis in ((spec,) if isinstance(spec, str) else spec or ()))


def mesh_of(params) -> Mesh | None:
    """The mesh a model's weights were loaded onto (None for weights on one device), so that whoever runs a
    sharded model (the scorer, the decoder) lays its inputs on the same devices without being told."""
    for leaf in jax.tree.leaves(params):
        placement = getattr(leaf, "sharding", None)
        if isinstance(placement, NamedSharding) and placement.mesh.size > 1:
            return placement.mesh
    return None


def mesh_context(mesh: Mesh | None):
    """`jax.set_mesh(mesh)` (activation constraints apply inside), or nothing without a mesh."""
    return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()


def replicate_unplaced(params, mesh: Mesh):
    """Weights loaded onto one device get a copy on every device of `mesh` (for batch-parallel work); weights that
    were loaded sharded stay as they are."""
    if all(len(x.devices()) == 1 for x in jax.tree.leaves(params)):
        return jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    return params


def bytes_per_device(state: nnx.State, mesh: Mesh, rules=DEFAULT_RULES) -> dict[str, int]:
    """What the rules put on each device for `state` (concrete or abstract, e.g. `nnx.state(abstract_model(...))`):
    `sharded` and `replicated` bytes per device, and the `total` size of the state."""
    out = {"sharded": 0, "replicated": 0, "total": 0}
    for variable in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        spec = logical_to_spec(_logical_axes(variable), variable.shape, mesh, rules)
        size = math.prod(variable.shape) * jax.numpy.dtype(variable.dtype).itemsize
        split = math.prod(mesh.shape[axis] for entry in spec if entry is not None
                          for axis in ((entry,) if isinstance(entry, str) else entry))
        out["total"] += size
        out["sharded" if split > 1 else "replicated"] += size // split
    return out
