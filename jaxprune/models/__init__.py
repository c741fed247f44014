"""Flax NNX models of the Llama family (and Qwen3, Gemma 3) and their configs."""

from jaxprune.models.config import ConfigError, ModelConfig
from jaxprune.models.hf_config import config_from_hf_dict, load_hf_config, to_hf_dict
from jaxprune.models.layers import LayerCache
from jaxprune.models.llama import (KVCache, Llama, ModelOutput, abstract_model, causal_mask, forward, init_cache,
                                   positions_from_keep)

__all__ = ["ConfigError", "ModelConfig", "config_from_hf_dict", "load_hf_config", "to_hf_dict", "KVCache",
           "LayerCache", "Llama", "ModelOutput", "abstract_model", "causal_mask", "forward", "init_cache",
           "positions_from_keep"]
