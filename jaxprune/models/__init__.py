"""Flax NNX models of the Llama family and their configs."""

from jaxprune.models.config import ConfigError, ModelConfig, config_from_hf_dict, load_hf_config
from jaxprune.models.llama import (KVCache, LayerCache, Llama, ModelOutput, abstract_model, causal_mask, forward,
                                   init_cache, positions_from_keep)

__all__ = ["ConfigError", "ModelConfig", "config_from_hf_dict", "load_hf_config", "KVCache", "LayerCache", "Llama",
           "ModelOutput", "abstract_model", "causal_mask", "forward", "init_cache", "positions_from_keep"]
