"""ModelConfig: the one description of a Llama-family decoder, built from a Hugging Face `config.json`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")


class ConfigError(ValueError):
    """A model config that we cannot build a model from; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Rotary-embedding frequency scaling (`rope_type` 'llama3' or 'linear'); fields follow Hugging Face."""

    rope_type: str
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a Llama-family decoder (Llama 2/3.x, Qwen2/2.5, Mistral, SmolLM2)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_heads} is not a multiple of num_key_value_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    def rope_inv_freq(self) -> np.ndarray:
        """Inverse rotary frequencies (head_dim // 2,), float32, with the configured scaling applied."""
        exponents = np.arange(0, self.head_dim, 2, dtype=np.int64).astype(np.float32) / self.head_dim
        inv_freq = (1.0 / (self.rope_theta ** exponents)).astype(np.float32)
        scaling = self.rope_scaling
        if scaling is None:
            return inv_freq
        if scaling.rope_type == "linear":
            return (inv_freq / scaling.factor).astype(np.float32)
        # Llama 3.1: long wavelengths are divided by `factor`, short ones kept, the band between interpolated.
        old_len = scaling.original_max_position_embeddings
        low_freq_wavelen = old_len / scaling.low_freq_factor
        high_freq_wavelen = old_len / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
        smooth = (old_len / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
        smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
        is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
        return np.where(is_medium, smoothed, scaled).astype(np.float32)

    def to_hf_dict(self) -> dict[str, Any]:
        """The Hugging Face `config.json` contents that `transformers` rebuilds this model from."""
        architectures = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
        rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope.update(dataclasses.asdict(self.rope_scaling))
        eos: Any = list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0]
        config: dict[str, Any] = {
            "architectures": [architectures[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos if self.eos_token_ids else None,
            "pad_token_id": self.pad_token_id,
        }
        if self.model_type == "llama":
            config["attention_bias"] = self.qkv_bias
            config["mlp_bias"] = self.mlp_bias
        if self.model_type in ("mistral", "qwen2"):
            config["sliding_window"] = self.sliding_window
        if self.model_type == "qwen2":
            config["use_sliding_window"] = self.sliding_window is not None
        return config


def _require(config: dict[str, Any], field: str, source: str) -> Any:
    if field not in config or config[field] is None:
        raise ConfigError(f"{source}: missing required field '{field}'")
    return config[field]


def _rope_fields(config: dict[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """Reads rotary settings from either transformers-5 `rope_parameters` or the older `rope_theta`/`rope_scaling`."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"{source}: field 'rope_parameters.rope_type'={rope_type!r} is not supported "
                          f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    if rope_type == "default":
        return theta, None
    known = {f.name for f in dataclasses.fields(RopeScaling)}
    scaling = RopeScaling(rope_type=rope_type, **{k: v for k, v in params.items() if k in known and k != "rope_type"})
    return theta, scaling


def config_from_hf_dict(config: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Builds a ModelConfig from a parsed Hugging Face config; `source` names the file in error messages."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"{source}: field 'model_type'={model_type!r} is not a supported architecture "
                          f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    hidden_act = config.get("hidden_act", "silu")
    if hidden_act != "silu":
        raise ConfigError(f"{source}: field 'hidden_act'={hidden_act!r} is not supported (only 'silu')")
    num_heads = int(_require(config, "num_attention_heads", source))
    hidden_size = int(_require(config, "hidden_size", source))
    theta, scaling = _rope_fields(config, source)
    eos = config.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
    if model_type == "qwen2":
        qkv_bias, o_bias, mlp_bias = True, False, False
        sliding_window = config.get("sliding_window") if config.get("use_sliding_window") else None
    else:
        qkv_bias = o_bias = bool(config.get("attention_bias", False))
        mlp_bias = bool(config.get("mlp_bias", False))
        sliding_window = config.get("sliding_window")
    try:
        return ModelConfig(
            model_type=model_type,
            vocab_size=int(_require(config, "vocab_size", source)),
            hidden_size=hidden_size,
            intermediate_size=int(_require(config, "intermediate_size", source)),
            num_layers=int(_require(config, "num_hidden_layers", source)),
            num_heads=num_heads,
            num_kv_heads=int(config.get("num_key_value_heads") or num_heads),
            head_dim=int(config.get("head_dim") or hidden_size // num_heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=mlp_bias,
            sliding_window=int(sliding_window) if sliding_window else None,
            bos_token_id=config.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=config.get("pad_token_id"),
        )
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


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
