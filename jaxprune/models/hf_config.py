"""Hugging Face `config.json` <-> ModelConfig, one small reader and writer per model family.

Each family says what its config means in our terms (biases, norms, which layers slide, rotary bases); everything
else (sizes, eps, token ids, rope scaling) is read the same way for all of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, NamedTuple

from jaxprune.models.config import (FULL_ATTENTION, SLIDING_ATTENTION, ConfigError, ModelConfig, RopeScaling)

SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")


class Family(NamedTuple):
    architecture: str                                   # the `transformers` class `config.json` names
    read: Callable[[dict[str, Any], str], dict[str, Any]]  # config -> our variant fields
    write: Callable[[ModelConfig], dict[str, Any]]      # our config -> the family's own fields
    defaults: dict[str, Any] = {}                        # what `transformers` assumes for a field a config leaves out


# `transformers`' own defaults (its config classes), for hub configs that spell out only what differs: Gemma 3 4B's
# `text_config` names six fields.
_QWEN_DEFAULTS = {"rms_norm_eps": 1e-6, "max_window_layers": 28, "max_position_embeddings": 32768}
_GEMMA3_DEFAULTS = {"vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "rms_norm_eps": 1e-6,
                    "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "query_pre_attn_scalar": 256,
                    "sliding_window": 4096, "max_position_embeddings": 131_072, "tie_word_embeddings": True,
                    "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}


def _windowed_layers(config: dict[str, Any], window: int | None) -> tuple[str, ...]:
    """Qwen2 / Qwen3: the saved `layer_types`, else sliding from `max_window_layers` on, when the window is used."""
    if config.get("layer_types"):
        return tuple(config["layer_types"]) if window else ()
    if not window:
        return ()
    first = int(config.get("max_window_layers", 0))
    return tuple(SLIDING_ATTENTION if i >= first else FULL_ATTENTION for i in range(config["num_hidden_layers"]))


def _read_llama(config, source):
    return {"qkv_bias": bool(config.get("attention_bias", False)), "o_bias": bool(config.get("attention_bias", False)),
            "mlp_bias": bool(config.get("mlp_bias", False))}


def _read_mistral(config, source):
    window = config.get("sliding_window")  # every layer slides when set
    return {"sliding_window": int(window) if window else None,
            "layer_types": (SLIDING_ATTENTION,) * config["num_hidden_layers"] if window else ()}


def _read_qwen(qk_norm: bool):
    def read(config, source):
        window = int(config["sliding_window"]) if config.get("use_sliding_window") and config.get("sliding_window") \
            else None
        # Qwen2 always has q/k/v biases; Qwen3 follows `attention_bias`, on all four projections.
        bias = bool(config.get("attention_bias", False))
        return {"qkv_bias": bias if qk_norm else True, "o_bias": bias if qk_norm else False, "qk_norm": qk_norm,
                "sliding_window": window, "layer_types": _windowed_layers(config, window)}
    return read


def _read_gemma3(config, source):
    if config.get("attn_logit_softcapping") is not None:
        raise ConfigError(f"{source}: field 'attn_logit_softcapping' is not supported (Gemma 2's attention capping)")
    if config.get("use_bidirectional_attention"):
        raise ConfigError(f"{source}: field 'use_bidirectional_attention'=true is not supported")
    layers = config["num_hidden_layers"]
    pattern = int(config.get("sliding_window_pattern", 6))
    types = tuple(config.get("layer_types") or (
        SLIDING_ATTENTION if (i + 1) % pattern else FULL_ATTENTION for i in range(layers)))
    local = (config.get("rope_parameters") or {}).get(SLIDING_ATTENTION) or {}
    return {"qkv_bias": bool(config.get("attention_bias", False)), "o_bias": bool(config.get("attention_bias", False)),
            "qk_norm": True, "sandwich_norms": True, "norm_offset": True, "scale_embeddings": True,
            "hidden_act": config.get("hidden_activation", "gelu_pytorch_tanh"),
            "query_pre_attn_scalar": float(config.get("query_pre_attn_scalar", 256)),
            "final_logit_softcapping": config.get("final_logit_softcapping"),
            "sliding_window": int(config.get("sliding_window") or 4096), "layer_types": types,
            "local_rope_theta": float(local.get("rope_theta", config.get("rope_local_base_freq", 10000.0)))}


def _write_llama(c):
    return {"attention_bias": c.qkv_bias, "mlp_bias": c.mlp_bias}


def _write_mistral(c):
    return {"sliding_window": c.sliding_window}


def _write_qwen(c):
    slides = SLIDING_ATTENTION in c.layer_types
    return {"use_sliding_window": slides, "sliding_window": c.sliding_window,
            "max_window_layers": c.layer_types.index(SLIDING_ATTENTION) if slides else c.num_layers,
            "layer_types": list(c.layer_types) or [FULL_ATTENTION] * c.num_layers}


def _write_qwen3(c):
    return {**_write_qwen(c), "attention_bias": c.qkv_bias}


def _integral(value: float) -> float | int:
    """`transformers` validates some fields as int."""
    return int(value) if float(value).is_integer() else value


def _write_gemma3(c):
    return {"attention_bias": c.qkv_bias, "hidden_activation": c.hidden_act, "sliding_window": c.sliding_window,
            "layer_types": list(c.layer_types), "query_pre_attn_scalar": _integral(c.query_pre_attn_scalar),
            "final_logit_softcapping": c.final_logit_softcapping, "attn_logit_softcapping": None,
            "rope_parameters": {FULL_ATTENTION: _rope_dict(c),
                                SLIDING_ATTENTION: {"rope_type": "default", "rope_theta": c.local_rope_theta}}}


FAMILIES = {
    "llama": Family("LlamaForCausalLM", _read_llama, _write_llama, {"rms_norm_eps": 1e-6}),
    "mistral": Family("MistralForCausalLM", _read_mistral, _write_mistral,
                      {"rms_norm_eps": 1e-6, "sliding_window": 4096, "max_position_embeddings": 131_072}),
    "qwen2": Family("Qwen2ForCausalLM", _read_qwen(qk_norm=False), _write_qwen, _QWEN_DEFAULTS),
    "qwen3": Family("Qwen3ForCausalLM", _read_qwen(qk_norm=True), _write_qwen3, _QWEN_DEFAULTS),
    "gemma3_text": Family("Gemma3ForCausalLM", _read_gemma3, _write_gemma3, _GEMMA3_DEFAULTS),
}


def _require(config: dict[str, Any], field: str, source: str) -> Any:
    if field not in config or config[field] is None:
        raise ConfigError(f"{source}: missing required field '{field}'")
    return config[field]


def _rope_fields(config: dict[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """Rotary settings of the full-attention layers, from transformers-5 `rope_parameters` (flat, or per layer
    type as Gemma 3 writes it) or the older `rope_theta` / `rope_scaling`."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    field = "rope_parameters"
    if FULL_ATTENTION in params:
        params, field = dict(params[FULL_ATTENTION] or {}), f"rope_parameters.{FULL_ATTENTION}"
    theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"{source}: field '{field}.rope_type'={rope_type!r} is not supported "
                          f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    if rope_type == "default":
        return theta, None
    known = {f.name for f in dataclasses.fields(RopeScaling)}
    scaling = RopeScaling(rope_type=rope_type, **{k: v for k, v in params.items() if k in known and k != "rope_type"})
    return theta, scaling


def _rope_dict(c: ModelConfig) -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling is not None:
        rope.update(dataclasses.asdict(c.rope_scaling))
    return rope


def _language_model(config: dict[str, Any]) -> dict[str, Any]:
    """The text decoder's config of a Gemma 3 image-text model (`Gemma3ForConditionalGeneration`: 4B, 12B, 27B),
    whose language model is a Gemma 3 text model; other configs as they are."""
    if config.get("model_type") != "gemma3":
        return config
    text = {"model_type": "gemma3_text", **(config.get("text_config") or {})}
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if config.get(field) is not None:
            text.setdefault(field, config[field])
    text["final_logit_softcapping"] = None  # the image-text model never soft-caps its logits
    return text


def config_from_hf_dict(config: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Builds a ModelConfig from a parsed Hugging Face config; `source` names the file in error messages. An image-text
    Gemma 3 gives its language model (the vision tower is not loaded)."""
    config = _language_model(config)
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"{source}: field 'model_type'={model_type!r} is not a supported architecture "
                          f"(supported: {', '.join(FAMILIES)})")
    if model_type != "gemma3_text" and config.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{source}: field 'hidden_act'={config['hidden_act']!r} is not supported (only 'silu')")
    config = {**FAMILIES[model_type].defaults, **config}
    num_heads = int(_require(config, "num_attention_heads", source))
    hidden_size = int(_require(config, "hidden_size", source))
    vocab_size = int(_require(config, "vocab_size", source))
    intermediate_size = int(_require(config, "intermediate_size", source))
    _require(config, "num_hidden_layers", source)
    theta, scaling = _rope_fields(config, source)
    eos = config.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
    variant = FAMILIES[model_type].read(config, source)  # its errors name the file already
    try:
        return ModelConfig(
            model_type=model_type,
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_layers=int(config["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(config.get("num_key_value_heads") or num_heads),
            head_dim=int(config.get("head_dim") or hidden_size // num_heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            bos_token_id=config.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=config.get("pad_token_id"),
            **variant,
        )
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def to_hf_dict(c: ModelConfig) -> dict[str, Any]:
    """The Hugging Face `config.json` contents that `transformers` rebuilds this model from."""
    eos: Any = list(c.eos_token_ids) if len(c.eos_token_ids) != 1 else c.eos_token_ids[0]
    family = FAMILIES[c.model_type]
    return {
        "architectures": [family.architecture],
        "model_type": c.model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": c.hidden_act,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_parameters": _rope_dict(c),
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos if c.eos_token_ids else None,
        "pad_token_id": c.pad_token_id,
        **family.write(c),
    }


PUBLISHED_DIR = os.path.join(os.path.dirname(__file__), "published")


def published_config_path(hub_id: str) -> str | None:
    """The `config.json` of a hub model shipped with jaxprune (the paper's models, typed in from the published files,
    so that their shapes are known with no hub), or None."""
    path = os.path.join(PUBLISHED_DIR, hub_id.replace("/", "--") + ".json")
    return path if os.path.isfile(path) else None


def load_hf_config(directory: str | os.PathLike) -> ModelConfig:
    """Reads `<directory>/config.json` (or a config file itself) into a ModelConfig."""
    path = directory if os.path.isfile(directory) else os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no config.json in the model directory")
    with open(path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    return config_from_hf_dict(config, source=path)
