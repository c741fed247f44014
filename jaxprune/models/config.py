"""ModelConfig: the one description of a decoder of the Llama family and its relatives (Qwen3, Gemma 3).

The variants differ by configuration, not by code: where norms sit and how they scale, q/k norms, the embedding
scale, the activation, soft-capping, and which layers attend through a sliding window with which rotary settings.
Reading and writing Hugging Face `config.json` files is `jaxprune.models.hf_config`'s job.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

FULL_ATTENTION, SLIDING_ATTENTION = "full_attention", "sliding_attention"
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")


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
    """Hyperparameters of one decoder (Llama 2/3.x, Qwen2/2.5, Qwen3, Mistral, SmolLM2, Gemma 3 text)."""

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
    # Attention pattern: each layer's type (FULL_ATTENTION or SLIDING_ATTENTION; empty: all full). A sliding layer's
    # query at position p sees keys at positions > p - sliding_window, rotated with `local_rope_theta` when set.
    layer_types: tuple[str, ...] = ()
    sliding_window: int | None = None
    local_rope_theta: float | None = None
    # Variants of the block (Llama's when all are off).
    qk_norm: bool = False                 # RMSNorm over each head of q and k before the rotation (Qwen3, Gemma 3)
    sandwich_norms: bool = False          # norms after attention and MLP too, before the residual add (Gemma 3)
    norm_offset: bool = False             # norms scale by (1 + weight), in float32 (Gemma)
    scale_embeddings: bool = False        # embeddings times sqrt(hidden_size) (Gemma)
    hidden_act: str = "silu"
    query_pre_attn_scalar: float | None = None  # attention scores scaled by this ** -0.5 instead of head_dim ** -0.5
    final_logit_softcapping: float | None = None  # logits = cap * tanh(logits / cap)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_heads} is not a multiple of num_key_value_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ConfigError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        unknown = set(self.layer_types) - {FULL_ATTENTION, SLIDING_ATTENTION}
        if unknown:
            raise ConfigError(f"layer_types has unknown entries {sorted(unknown)}")
        if SLIDING_ATTENTION in self.layer_types and not self.sliding_window:
            raise ConfigError("layer_types has sliding layers but sliding_window is not set")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not supported (supported: {', '.join(ACTIVATIONS)})")

    def layer_type(self, index: int) -> str:
        return self.layer_types[index] if self.layer_types else FULL_ATTENTION

    @property
    def attention_types(self) -> tuple[str, ...]:
        """The distinct layer types, each of which gets its own mask and rotary frequencies."""
        return tuple(sorted({self.layer_type(i) for i in range(self.num_layers)}))

    def rope_inv_freq(self, layer_type: str = FULL_ATTENTION) -> np.ndarray:
        """Inverse rotary frequencies (head_dim // 2,), float32, of a layer type, with its scaling applied (sliding
        layers of a model with `local_rope_theta` use that base and no scaling, as Gemma 3 does)."""
        exponents = np.arange(0, self.head_dim, 2, dtype=np.int64).astype(np.float32) / self.head_dim
        if layer_type == SLIDING_ATTENTION and self.local_rope_theta is not None:
            return (1.0 / (self.local_rope_theta ** exponents)).astype(np.float32)
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
