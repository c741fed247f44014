"""Levanter-style parity: tiny random transformers models -> save_pretrained -> our loader -> export -> transformers."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GEMMA3, TINY, tiny_torch_model, torch_logits

from jaxprune.checkpoints import CheckpointError, load_hf_model, save_hf_model
from jaxprune.models import ConfigError, causal_mask, positions_from_keep

FAMILIES = {
    "llama3-gqa-untied": ("llama3", {}),
    "llama-tied-bias": ("llama", {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True}),
    "qwen2-bias-tied": ("qwen2", {"tie_word_embeddings": True}),
    "qwen2-bias-untied": ("qwen2", {"tie_word_embeddings": False}),
    "mistral-gqa": ("mistral", {"head_dim": 24}),
    "mistral-window-shorter-than-sequence": ("mistral", {"sliding_window": 8}),
    "qwen3-qk-norm": ("qwen3", {"head_dim": 24}),
    "qwen3-tied-windowed-upper-layer": ("qwen3", {"tie_word_embeddings": True, "use_sliding_window": True,
                                                  "sliding_window": 8, "max_window_layers": 1}),
    "gemma3": ("gemma3", {}),
}


def our_logits(model, ids):
    keep = jnp.ones(ids.shape, bool)
    return np.asarray(model(jnp.asarray(ids), positions_from_keep(keep), causal_mask(keep)).logits)


def token_batch(seed=0, shape=(2, 37), vocab=128):
    return np.random.RandomState(seed).randint(0, vocab, shape)


@pytest.mark.parametrize("name", FAMILIES)
def test_load_matches_transformers_and_export_round_trips(name, tmp_path):
    import transformers

    kind, overrides = FAMILIES[name]
    reference = tiny_torch_model(kind, **overrides)
    reference.save_pretrained(tmp_path / "source")
    ids = token_batch()
    expected = torch_logits(reference, ids)

    ours = load_hf_model(str(tmp_path / "source"))
    np.testing.assert_allclose(our_logits(ours, ids), expected, atol=1e-4, rtol=0)

    save_hf_model(ours, str(tmp_path / "export"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(reloaded) is type(reference)
    np.testing.assert_allclose(torch_logits(reloaded, ids), expected, atol=1e-5, rtol=0)


def test_sharded_index_checkpoint_loads_and_exports_sharded(tmp_path):
    import transformers

    reference = tiny_torch_model("llama3")
    reference.save_pretrained(tmp_path / "source", max_shard_size="20KB")
    assert os.path.isfile(tmp_path / "source" / "model.safetensors.index.json")
    ours = load_hf_model(str(tmp_path / "source"))
    ids = token_batch(1)
    np.testing.assert_allclose(our_logits(ours, ids), torch_logits(reference, ids), atol=1e-4, rtol=0)

    save_hf_model(ours, str(tmp_path / "export"), max_shard_bytes=50_000)
    index = json.loads((tmp_path / "export" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    np.testing.assert_allclose(torch_logits(reloaded, ids), torch_logits(reference, ids), atol=1e-5, rtol=0)


def test_bfloat16_load_and_export_write_the_source_tensors_rounded_to_bfloat16(tmp_path):
    import torch
    import transformers

    reference = tiny_torch_model("llama3")
    reference.save_pretrained(tmp_path / "source")
    ours = load_hf_model(str(tmp_path / "source"), dtype=jnp.bfloat16)
    assert ours.embed_tokens[...].dtype == jnp.bfloat16
    ids = token_batch(2)
    np.testing.assert_allclose(our_logits(ours, ids), torch_logits(reference, ids), atol=0.1, rtol=0)
    save_hf_model(ours, str(tmp_path / "export"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert reloaded.dtype == torch.bfloat16
    source, exported = reference.state_dict(), reloaded.state_dict()
    assert exported.keys() == source.keys()
    for name, tensor in source.items():  # a float32 value rounds to one bfloat16: the export must hold exactly it
        assert torch.equal(exported[name], tensor.to(torch.bfloat16)), name


def _edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


@pytest.fixture
def saved_llama(tmp_path):
    tiny_torch_model("llama").save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_unknown_architecture_is_refused_naming_file_and_field(saved_llama):
    _edit_config(saved_llama, model_type="gpt_neox")
    with pytest.raises(ConfigError, match=r"config\.json: field 'model_type'='gpt_neox' is not a supported"):
        load_hf_model(str(saved_llama))


def test_missing_config_field_is_refused_naming_file_and_field(saved_llama):
    _edit_config(saved_llama, num_hidden_layers=None)
    with pytest.raises(ConfigError, match=r"config\.json: missing required field 'num_hidden_layers'"):
        load_hf_model(str(saved_llama))


def test_tensor_of_wrong_shape_is_refused_naming_tensor_and_shapes(saved_llama):
    from safetensors.numpy import load_file, save_file

    path = str(saved_llama / "model.safetensors")
    tensors = load_file(path)
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:-1]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"layers\.1\.mlp\.up_proj\.kernel has shape \(64, 95\), "
                                              r"expected \(64, 96\)"):
        load_hf_model(str(saved_llama))


def test_missing_tensor_is_refused_naming_it(saved_llama):
    from safetensors.numpy import load_file, save_file

    path = str(saved_llama / "model.safetensors")
    tensors = load_file(path)
    del tensors["model.norm.weight"]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"tensor 'model\.norm\.weight' is missing"):
        load_hf_model(str(saved_llama))


def test_pickle_checkpoint_is_refused_without_loading_it(saved_llama):
    os.remove(saved_llama / "model.safetensors")
    # Not even a valid pickle: the loader must refuse by name, never try to unpickle.
    (saved_llama / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: pickle checkpoints are refused"):
        load_hf_model(str(saved_llama))


def test_unsupported_rope_type_is_refused(saved_llama):
    _edit_config(saved_llama, rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0})
    with pytest.raises(ConfigError, match=r"'rope_parameters.rope_type'='yarn' is not supported"):
        load_hf_model(str(saved_llama))


@pytest.mark.parametrize("name", FAMILIES)
def test_masking_tokens_equals_removing_them_in_every_family(name, tmp_path):
    kind, overrides = FAMILIES[name]
    tiny_torch_model(kind, **overrides).save_pretrained(tmp_path)
    model = load_hf_model(str(tmp_path))
    ids = token_batch(shape=(1, 30))
    keep = np.ones(ids.shape, bool)
    keep[0, [2, 9, 10, 21]] = False  # with an 8-token window, the window's start moves with the deletions
    masked = model(jnp.asarray(ids), positions_from_keep(jnp.asarray(keep)), causal_mask(jnp.asarray(keep))).logits
    np.testing.assert_allclose(np.asarray(masked)[keep], our_logits(model, ids[:, keep[0]])[0], atol=1e-5, rtol=0)


def test_an_image_text_gemma3_loads_its_language_model_with_the_same_text_logits(tmp_path):
    import torch
    import transformers

    vision = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    # No soft-capping: the image-text model never applies it (Gemma 3's own configs leave it unset).
    text = transformers.Gemma3TextConfig(**{**TINY, **GEMMA3, "final_logit_softcapping": None})
    config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                       image_token_index=TINY["vocab_size"] - 1, boi_token_index=1, eoi_token_index=2)
    torch.manual_seed(0)
    reference = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    reference.save_pretrained(tmp_path / "source")
    ids = token_batch(vocab=TINY["vocab_size"] - 1)  # text only: no image token
    ours = load_hf_model(str(tmp_path / "source"))
    assert ours.config.model_type == "gemma3_text"
    np.testing.assert_allclose(our_logits(ours, ids), torch_logits(reference, ids), atol=1e-4, rtol=0)
