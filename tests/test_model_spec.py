"""`ModelSpec`: refused before any weights are read, loaded onto its mesh as transformers computes it, a hub
revision passed to the download, and a `Pruner` built from a model already loaded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_torch_model, torch_logits

from jaxprune.checkpoints import CheckpointError, LoadedModel, ModelSpec
from jaxprune.models import causal_mask, positions_from_keep


@pytest.mark.parametrize("settings, message", [
    (dict(dtype="float16"), "dtype must be one of float32, bfloat16"),
    (dict(mesh="data:2"), "mesh shape 'data:2'"),
    (dict(across_slices="data"), "across slices: mesh shape 'data'"),
    (dict(model="/no/such/folder", revision="v1"), "a revision .* pins a hub id"),
    (dict(model="org/tiny@v1", revision="v2"), "pins revision 'v1', but revision 'v2' is asked too"),
])
def test_bad_settings_are_refused_when_the_spec_is_built(settings, message):
    with pytest.raises(CheckpointError, match=message):
        ModelSpec(**settings)


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory, smollm2):
    directory = tmp_path_factory.mktemp("spec")
    reference = tiny_torch_model("llama")
    reference.save_pretrained(directory)
    smollm2[1].save_pretrained(directory)  # tokenizer files: a stage cannot run without them
    return reference, str(directory)


def test_load_places_the_weights_on_the_mesh_and_computes_what_transformers_computes(torch_dir):
    reference, directory = torch_dir
    model, tokenizer, mesh = ModelSpec(directory, mesh="fsdp=4,tensor=2").load()
    assert dict(mesh.shape) == {"fsdp": 4, "tensor": 2} and tokenizer is not None
    kernel = model.layers[0].mlp.up_proj.kernel[...]
    assert kernel.sharding.device_set == set(jax.devices()) and not kernel.sharding.is_fully_replicated
    ids = np.random.RandomState(0).randint(0, 128, (2, 19))
    keep = jnp.ones(ids.shape, bool)
    ours = model(jnp.asarray(ids), positions_from_keep(keep), causal_mask(keep)).logits
    np.testing.assert_allclose(np.asarray(ours), torch_logits(reference, ids), atol=1e-4, rtol=0)


def test_a_model_without_tokenizer_files_is_refused_by_name(tmp_path):
    tiny_torch_model("llama").save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=f"--model={tmp_path}: no tokenizer files next to the model"):
        ModelSpec(str(tmp_path)).load()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        ModelSpec(str(tmp_path)).tokenizer()


def test_a_hub_revision_reaches_the_download(monkeypatch, torch_dir):
    import huggingface_hub

    asked = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):  # the hub, which is not reachable here
        asked.append((repo_id, revision))
        return torch_dir[1]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    ModelSpec("org/tiny", revision="0123abc", mesh="data=1").load()
    ModelSpec("org/tiny@v2.1", mesh="data=1").load()  # pinned in the model string, as records then name it
    assert asked == [("org/tiny", "0123abc"), ("org/tiny", "v2.1")]


def test_a_mistyped_local_path_is_reported_missing_not_downloaded(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: pytest.fail("downloaded"))
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="--model=models/tiny: not an existing file or directory"):
        ModelSpec("models/tiny").load()


def test_a_pruner_built_from_a_loaded_model_prunes_as_one_built_from_its_name(tiny_dir):
    import jaxprune

    chain = dict(question="Tom has 3 apples and buys 5 more.", reasoning="3 + 5 = 8 apples.\n", answer="#### 8")
    by_name = jaxprune.Pruner(tiny_dir, mesh=None).prune(**chain, keep_ratio=0.5)
    loaded = ModelSpec(tiny_dir, mesh="data=1").load()
    assert isinstance(loaded, LoadedModel)
    from_memory = jaxprune.Pruner(loaded, pruner_name="tiny").prune(**chain, keep_ratio=0.5)
    assert from_memory["deletion_order"] == by_name["deletion_order"] and from_memory["pruner"] == "tiny"
