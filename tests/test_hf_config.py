"""Hub configs that spell out only what differs from `transformers`' defaults read as `transformers` reads them."""

import json

import pytest

from jaxprune.models import ConfigError, load_hf_config
from jaxprune.models.config import FULL_ATTENTION, SLIDING_ATTENTION

# google/gemma-3-4b-it's config.json as published: its text_config names six fields.
GEMMA3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
    "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "torch_dtype": "bfloat16",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False},
}
QWEN3_WITHOUT_OPTIONALS = {"model_type": "qwen3", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 96,
                           "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                           "head_dim": 32, "attention_bias": True}


def _saved(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return load_hf_config(str(tmp_path))


def test_gemma3_4b_hub_config_reads_with_the_language_model_transformers_builds(tmp_path):
    import transformers

    ours = _saved(tmp_path, GEMMA3_4B)
    theirs = transformers.Gemma3Config(**GEMMA3_4B).text_config
    assert (ours.vocab_size, ours.hidden_size, ours.intermediate_size, ours.num_layers) == (
        theirs.vocab_size, theirs.hidden_size, theirs.intermediate_size, theirs.num_hidden_layers)
    assert (ours.num_heads, ours.num_kv_heads, ours.head_dim) == (
        theirs.num_attention_heads, theirs.num_key_value_heads, theirs.head_dim)
    assert (ours.rms_norm_eps, ours.max_position_embeddings, ours.query_pre_attn_scalar, ours.sliding_window) == (
        theirs.rms_norm_eps, theirs.max_position_embeddings, theirs.query_pre_attn_scalar, theirs.sliding_window)
    assert list(ours.layer_types) == list(theirs.layer_types)
    full, local = theirs.rope_parameters[FULL_ATTENTION], theirs.rope_parameters[SLIDING_ATTENTION]
    assert (ours.rope_theta, ours.rope_scaling.rope_type, ours.rope_scaling.factor) == (
        full["rope_theta"], full["rope_type"], full["factor"])
    assert ours.local_rope_theta == local["rope_theta"]
    assert ours.tie_word_embeddings and ours.final_logit_softcapping is None and ours.eos_token_ids == (1, 106)


def test_qwen3_defaults_and_attention_bias_are_transformers(tmp_path):
    import transformers

    ours = _saved(tmp_path, QWEN3_WITHOUT_OPTIONALS)
    theirs = transformers.Qwen3Config(**QWEN3_WITHOUT_OPTIONALS)
    assert (ours.rms_norm_eps, ours.max_position_embeddings) == (theirs.rms_norm_eps, theirs.max_position_embeddings)
    assert ours.qkv_bias and ours.o_bias  # Qwen3's attention_bias covers q, k, v and o


def test_a_config_error_names_the_file_once(tmp_path):
    with pytest.raises(ConfigError) as error:
        _saved(tmp_path, {**GEMMA3_4B["text_config"], "attn_logit_softcapping": 50.0})
    assert str(error.value).count("config.json") == 1 and "attn_logit_softcapping" in str(error.value)


def test_an_image_text_gemma3_never_soft_caps_as_transformers_does_not(tmp_path):
    text = {**GEMMA3_4B["text_config"], "final_logit_softcapping": 30.0}
    assert _saved(tmp_path, {**GEMMA3_4B, "text_config": text}).final_logit_softcapping is None
