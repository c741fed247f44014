"""`ModelSpec`: which model a stage runs, at which revision, in which dtype, on which devices.

Every stage (generate, prune, distill, analyze, export) and `jaxprune.Pruner` load their model through one
`ModelSpec`, so the checks a user's typo should fail early are made once, when the spec is built and before any
weights are read: a known dtype, mesh shapes that parse, a revision only where there is a hub to pin. `load()` makes
the mesh, places the weights straight into their shards and insists on the tokenizer, without which no stage can run.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

from jaxprune import sharding
from jaxprune.checkpoints.build import CheckpointError
from jaxprune.checkpoints.resolve import DEFAULT_MODEL, is_hub_id, load_model, load_tokenizer, split_revision

DTYPES = ("float32", "bfloat16")


class LoadedModel(NamedTuple):
    """A model on its mesh, with its tokenizer."""

    model: object  # jaxprune.models.Llama
    tokenizer: object
    mesh: object  # jax.sharding.Mesh


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """`model`: packaged:NAME, a `.gguf` file, a Hugging Face directory (local or gs://) or a hub id, which
    `org/name@rev` or `revision` pins to a branch, tag or commit (the model string is what records name as pruner,
    so `@rev` is recorded with it); `mesh`: axis sizes such as `data=-1` or `fsdp=-1,tensor=2` over this host's
    devices (one size may be -1: the rest); `across_slices`: axis sizes over the data-centre network (multi-slice
    training), each an axis of `mesh`."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    dtype: str = "float32"
    mesh: str = "data=-1"
    across_slices: str = ""

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise CheckpointError(f"--model={self.model}: dtype must be one of {', '.join(DTYPES)}, "
                                  f"got {self.dtype!r}")
        if self.revision and not is_hub_id(self.model):
            raise CheckpointError(f"--model={self.model}: a revision ({self.revision!r}) pins a hub id (org/name); "
                                  "a local path or packaged model has none")
        split_revision(self.model, self.revision)  # `org/name@rev` and a different `revision` disagree
        for name in ("mesh", "across_slices"):
            try:
                sharding.parse_mesh_shape(getattr(self, name))
            except ValueError as error:
                raise CheckpointError(f"{name.replace('_', ' ')}: {error}") from None

    def load(self, *, devices: Sequence | None = None, mesh=None) -> LoadedModel:
        """The model with its weights placed on the mesh (made over `devices`, default this host's, unless a
        `jax.sharding.Mesh` is given), and its tokenizer."""
        import jax
        import jax.numpy as jnp

        if mesh is None:
            mesh = sharding.make_mesh(sharding.parse_mesh_shape(self.mesh),
                                      devices=jax.local_devices() if devices is None else devices,
                                      across_slices=sharding.parse_mesh_shape(self.across_slices) or None)
        model, tokenizer = load_model(self.model, revision=self.revision, dtype=jnp.dtype(self.dtype), mesh=mesh)
        if tokenizer is None:
            raise self._no_tokenizer()
        return LoadedModel(model, tokenizer, mesh)

    def tokenizer(self):
        """The tokenizer alone (no weights read), for stages that only render or decode token ids."""
        tokenizer = load_tokenizer(self.model, revision=self.revision)
        if tokenizer is None:
            raise self._no_tokenizer()
        return tokenizer

    def _no_tokenizer(self) -> CheckpointError:
        return CheckpointError(f"--model={self.model}: no tokenizer files next to the model")
