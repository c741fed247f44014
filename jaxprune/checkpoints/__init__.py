"""Checkpoint I/O: Hugging Face safetensors in and out, GGUF in, and `--model` resolution."""

from jaxprune.checkpoints.build import CheckpointError
from jaxprune.checkpoints.gguf import load_gguf_model
from jaxprune.checkpoints.gguf_tokenizer import load_gguf_tokenizer
from jaxprune.checkpoints.hf import load_hf_model, save_hf_model
from jaxprune.checkpoints.resolve import DEFAULT_MODEL, load_model, load_tokenizer
from jaxprune.checkpoints.spec import DTYPES, LoadedModel, ModelSpec

__all__ = ["CheckpointError", "load_gguf_model", "load_gguf_tokenizer", "load_hf_model", "save_hf_model",
           "DEFAULT_MODEL", "load_model", "load_tokenizer", "DTYPES", "LoadedModel", "ModelSpec"]
