"""GGUF checkpoints (llama.cpp): Llama (SmolLM2, Mistral, Llama 3.x), Qwen2, Qwen3 and Gemma 3, dequantised.

The metadata is translated into the Hugging Face config fields it stands for and read by the same parser as a
`config.json`, so a family's defaults live in one place (`jaxprune.models.hf_config`). Where llama.cpp's converter
changed a tensor we undo it: Llama's q/k rows are permuted for its interleaved RoPE, Gemma's norm weights are stored
plus one, and Llama 3.x's rope scaling is baked into a `rope_freqs` tensor, from which we recover its settings.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxprune import sharding as sharding_lib
from jaxprune.checkpoints.build import CheckpointError, ParamPath, build_model
from jaxprune.checkpoints.gguf_file import GGUFFile
from jaxprune.models.config import ModelConfig, RopeScaling
from jaxprune.models.hf_config import config_from_hf_dict
from jaxprune.models.llama import Llama

# `general.architecture` -> our model type.
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3_text"}

_LAYER_TENSORS = {
    ("input_layernorm", "scale"): "attn_norm.weight",
    ("post_attention_layernorm", "scale"): "ffn_norm.weight",  # Llama's name for the MLP's input norm
    ("self_attn", "q_proj", "kernel"): "attn_q.weight",
    ("self_attn", "k_proj", "kernel"): "attn_k.weight",
    ("self_attn", "v_proj", "kernel"): "attn_v.weight",
    ("self_attn", "o_proj", "kernel"): "attn_output.weight",
    ("self_attn", "q_proj", "bias"): "attn_q.bias",
    ("self_attn", "k_proj", "bias"): "attn_k.bias",
    ("self_attn", "v_proj", "bias"): "attn_v.bias",
    ("self_attn", "o_proj", "bias"): "attn_output.bias",
    ("self_attn", "q_norm", "scale"): "attn_q_norm.weight",
    ("self_attn", "k_norm", "scale"): "attn_k_norm.weight",
    ("mlp", "gate_proj", "kernel"): "ffn_gate.weight",
    ("mlp", "up_proj", "kernel"): "ffn_up.weight",
    ("mlp", "down_proj", "kernel"): "ffn_down.weight",
}
_SANDWICH_TENSORS = {  # Gemma 3: four norms a layer
    ("post_attention_layernorm", "scale"): "post_attention_norm.weight",
    ("pre_feedforward_layernorm", "scale"): "ffn_norm.weight",
    ("post_feedforward_layernorm", "scale"): "post_ffw_norm.weight",
}
_GLOBAL_TENSORS = {
    ("embed_tokens",): "token_embd.weight",
    ("norm", "scale"): "output_norm.weight",
    ("lm_head", "kernel"): "output.weight",
}
# Llama 3.x's rope settings (low / high frequency factors, original context), tried against a file's `rope_freqs`.
_LLAMA3_ROPE_SETTINGS = ((1.0, 4.0, 8192),)


def gguf_tensor_name(path: ParamPath, config: ModelConfig) -> str:
    """The GGUF tensor name of one of our parameter paths."""
    if path in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[path]
    _, layer, *rest = path
    names = {**_LAYER_TENSORS, **_SANDWICH_TENSORS} if config.sandwich_norms else _LAYER_TENSORS
    return f"blk.{layer}.{names[tuple(rest)]}"


def _unpermute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Inverts llama.cpp's per-head interleaving of the rows of a q or k projection (`[out, ...]`)."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _llama3_rope(file: GGUFFile, theta: float, head_dim: int) -> dict:
    """The Llama 3.x rope scaling whose frequencies `rope_freqs.weight` holds (llama.cpp divides each base
    frequency by its factor); refused, naming the tensor, when no known setting reproduces it."""
    factors = file.tensor("rope_freqs.weight").reshape(-1)
    for low, high, original in _LLAMA3_ROPE_SETTINGS:
        scaling = RopeScaling("llama3", float(factors.max()), low, high, original)
        probe = ModelConfig(model_type="llama", vocab_size=1, hidden_size=head_dim, intermediate_size=1, num_layers=1,
                            num_heads=1, num_kv_heads=1, head_dim=head_dim, rope_theta=theta)
        base = probe.rope_inv_freq()
        scaled = dataclasses.replace(probe, rope_scaling=scaling).rope_inv_freq()
        if factors.shape == base.shape and np.allclose(base / scaled, factors, rtol=1e-5):
            return {"rope_type": "llama3", "rope_theta": theta, "factor": scaling.factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": original}
    raise CheckpointError(f"{file.path}: tensor 'rope_freqs.weight' matches no Llama 3 rope scaling we know; load "
                          "the Hugging Face safetensors directory instead")


def gguf_config(file: GGUFFile) -> ModelConfig:
    """ModelConfig from GGUF metadata, through the Hugging Face config fields the metadata stands for."""
    architecture = file.field("general.architecture")
    if architecture not in MODEL_TYPES:
        raise CheckpointError(f"{file.path}: field 'general.architecture'={architecture!r} is not supported "
                              f"(supported: {', '.join(MODEL_TYPES)}); load the Hugging Face safetensors directory "
                              "instead")

    def meta(name, default=KeyError):
        return file.field(f"{architecture}.{name}", default)

    heads, hidden = int(meta("attention.head_count")), int(meta("embedding_length"))
    layers = int(meta("block_count"))
    head_dim = int(meta("attention.key_length", None) or meta("rope.dimension_count", None) or hidden // heads)
    theta = float(meta("rope.freq_base", 10000.0))
    eos = file.field("tokenizer.ggml.eos_token_id", None)
    config = {
        "model_type": MODEL_TYPES[architecture],
        "vocab_size": int(meta("vocab_size", None) or len(file.field("tokenizer.ggml.tokens"))),
        "hidden_size": hidden, "intermediate_size": int(meta("feed_forward_length")), "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": int(meta("attention.head_count_kv", heads)),
        "head_dim": head_dim, "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon")), "rope_theta": theta,
        "max_position_embeddings": int(meta("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in file.tensors,
        "bos_token_id": file.field("tokenizer.ggml.bos_token_id", None), "eos_token_id": eos,
        "pad_token_id": file.field("tokenizer.ggml.padding_token_id", None),
    }
    scaling = meta("rope.scaling.type", None)
    if scaling not in (None, "none", "linear"):
        raise CheckpointError(f"{file.path}: field '{architecture}.rope.scaling.type'={scaling!r} is not supported "
                              "(supported: linear); load the Hugging Face safetensors directory instead")
    if scaling == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "rope_theta": theta,
                                  "factor": float(meta("rope.scaling.factor"))}
    if "rope_freqs.weight" in file.tensors:
        config["rope_scaling"] = _llama3_rope(file, theta, head_dim)
    if architecture == "gemma3":
        # Not in the metadata: llama.cpp's own choices (every 6th layer global; Gemma 3 27B scales queries by
        # hidden / heads, the others by head_dim).
        config["sliding_window"] = int(meta("attention.sliding_window"))
        config["query_pre_attn_scalar"] = hidden // heads if layers == 62 else head_dim
    return config_from_hf_dict(config, source=file.path)


def load_gguf_model(path: str, *, dtype=jnp.float32, mesh: Mesh | None = None,
                    rules=sharding_lib.DEFAULT_RULES) -> Llama:
    """Loads a GGUF file of a supported architecture (any quantisation the `gguf` package dequantises)."""
    file = GGUFFile(path)
    config = gguf_config(file)
    permuted = file.field("general.architecture") == "llama"  # only Llama's converter interleaves q/k rows

    def tensor_for(param: ParamPath) -> np.ndarray:
        weight = file.tensor(gguf_tensor_name(param, config))
        if permuted and param[-2:] in (("q_proj", "kernel"), ("q_proj", "bias")):
            weight = _unpermute_rope_rows(weight, config.num_heads)
        elif permuted and param[-2:] in (("k_proj", "kernel"), ("k_proj", "bias")):
            weight = _unpermute_rope_rows(weight, config.num_kv_heads)
        if config.norm_offset and param[-1] == "scale":
            weight = weight - 1.0  # llama.cpp stores Gemma's (1 + weight)
        return weight.T if param[-1] == "kernel" else weight

    return build_model(config, tensor_for, dtype=dtype, mesh=mesh, rules=rules, source=path)
