"""GGUF checkpoints (llama.cpp): config from metadata, dequantised weights, and the tokenizer rebuilt from metadata.

llama.cpp stores the q/k projection rows of Llama models permuted for its interleaved RoPE; we undo that so the
weights match the Hugging Face (split-halves) convention that our model uses.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxprune import sharding as sharding_lib
from jaxprune.checkpoints.build import CheckpointError, ParamPath, build_model
from jaxprune.models.config import ModelConfig
from jaxprune.models.llama import Llama

_LAYER_TENSORS = {
    ("input_layernorm", "scale"): "attn_norm.weight",
    ("post_attention_layernorm", "scale"): "ffn_norm.weight",
    ("self_attn", "q_proj", "kernel"): "attn_q.weight",
    ("self_attn", "k_proj", "kernel"): "attn_k.weight",
    ("self_attn", "v_proj", "kernel"): "attn_v.weight",
    ("self_attn", "o_proj", "kernel"): "attn_output.weight",
    ("self_attn", "q_proj", "bias"): "attn_q.bias",
    ("self_attn", "k_proj", "bias"): "attn_k.bias",
    ("self_attn", "v_proj", "bias"): "attn_v.bias",
    ("self_attn", "o_proj", "bias"): "attn_output.bias",
    ("mlp", "gate_proj", "kernel"): "ffn_gate.weight",
    ("mlp", "up_proj", "kernel"): "ffn_up.weight",
    ("mlp", "down_proj", "kernel"): "ffn_down.weight",
}
_GLOBAL_TENSORS = {
    ("embed_tokens",): "token_embd.weight",
    ("norm", "scale"): "output_norm.weight",
    ("lm_head", "kernel"): "output.weight",
}
# Byte-level BPE pre-tokenizers by `tokenizer.ggml.pre`, as in the original Hugging Face tokenizers.
_PRE_TOKENIZERS = ("smollm", "gpt-2", "gpt2", "default")


def gguf_tensor_name(path: ParamPath) -> str:
    """The GGUF tensor name of one of our parameter paths."""
    if path in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[path]
    _, layer, *rest = path
    return f"blk.{layer}.{_LAYER_TENSORS[tuple(rest)]}"


def _unpermute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Inverts llama.cpp's per-head interleaving of the rows of a q or k projection (`[out, ...]`)."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


class GGUFFile:
    """An opened GGUF file: metadata fields and tensors by name."""

    def __init__(self, path: str):
        import gguf

        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: no such GGUF file")
        try:
            self.reader = gguf.GGUFReader(path)
        except (ValueError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable GGUF file ({error})") from None
        self.path = path
        self.tensors = {tensor.name: tensor for tensor in self.reader.tensors}

    def field(self, key: str, default: Any = KeyError) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            if default is KeyError:
                raise CheckpointError(f"{self.path}: missing metadata field '{key}'")
            return default
        return field.contents()

    def tensor(self, name: str) -> np.ndarray:
        """A tensor dequantised to float32, in numpy (row-major, `[out, in]`) order."""
        from gguf.quants import dequantize

        tensor = self.tensors[name]
        return dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(
            tuple(int(d) for d in reversed(tensor.shape)))


def gguf_config(file: GGUFFile) -> ModelConfig:
    """ModelConfig from GGUF metadata (architecture 'llama', which also covers SmolLM2 and Mistral)."""
    architecture = file.field("general.architecture")
    if architecture != "llama":
        raise CheckpointError(f"{file.path}: field 'general.architecture'={architecture!r} is not supported "
                              "(only 'llama'); load the Hugging Face safetensors directory instead")
    if "rope_freqs.weight" in file.tensors:
        raise CheckpointError(f"{file.path}: tensor 'rope_freqs.weight' (per-frequency RoPE scaling) is not supported;"
                              " load the Hugging Face safetensors directory instead")
    heads = int(file.field("llama.attention.head_count"))
    hidden = int(file.field("llama.embedding_length"))
    eos = file.field("tokenizer.ggml.eos_token_id", None)
    return ModelConfig(
        model_type="llama",
        vocab_size=int(file.field("llama.vocab_size", None) or len(file.field("tokenizer.ggml.tokens"))),
        hidden_size=hidden,
        intermediate_size=int(file.field("llama.feed_forward_length")),
        num_layers=int(file.field("llama.block_count")),
        num_heads=heads,
        num_kv_heads=int(file.field("llama.attention.head_count_kv", heads)),
        head_dim=int(file.field("llama.rope.dimension_count", hidden // heads)),
        rms_norm_eps=float(file.field("llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(file.field("llama.rope.freq_base", 10000.0)),
        max_position_embeddings=int(file.field("llama.context_length", 4096)),
        tie_word_embeddings="output.weight" not in file.tensors,
        bos_token_id=file.field("tokenizer.ggml.bos_token_id", None),
        eos_token_ids=() if eos is None else (int(eos),),
        pad_token_id=file.field("tokenizer.ggml.padding_token_id", None),
    )


def load_gguf_model(path: str, *, dtype=jnp.float32, mesh: Mesh | None = None,
                    rules=sharding_lib.DEFAULT_RULES) -> Llama:
    """Loads a Llama-architecture GGUF file (any quantisation the `gguf` package dequantises)."""
    file = GGUFFile(path)
    config = gguf_config(file)

    def tensor_for(param: ParamPath) -> np.ndarray:
        name = gguf_tensor_name(param)
        if name not in file.tensors:
            raise CheckpointError(f"{path}: tensor '{name}' is missing")
        weight = file.tensor(name)
        if param[-2:] in (("q_proj", "kernel"), ("q_proj", "bias")):
            weight = _unpermute_rope_rows(weight, config.num_heads)
        elif param[-2:] in (("k_proj", "kernel"), ("k_proj", "bias")):
            weight = _unpermute_rope_rows(weight, config.num_kv_heads)
        return weight.T if param[-1] == "kernel" else weight

    return build_model(config, tensor_for, dtype=dtype, mesh=mesh, rules=rules, source=path)


def load_gguf_tokenizer(path: str):
    """Rebuilds the byte-level BPE tokenizer stored in GGUF metadata as a `PreTrainedTokenizerFast`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    file = GGUFFile(path)
    kind = file.field("tokenizer.ggml.model")
    pre = file.field("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in _PRE_TOKENIZERS:
        raise CheckpointError(f"{path}: tokenizer 'tokenizer.ggml.model'={kind!r} with 'tokenizer.ggml.pre'={pre!r} "
                              f"is not supported (byte-level BPE with pre-tokenizer {', '.join(_PRE_TOKENIZERS)})")
    tokens = list(file.field("tokenizer.ggml.tokens"))
    token_types = list(file.field("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(merge.split(" ", 1)) for merge in file.field("tokenizer.ggml.merges")]
    backend = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges,
                                   fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":  # SmolLM's tokenizer splits digits one by one before byte-level splitting
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    control, user_defined = 3, 4  # llama.cpp token types
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, token_types) if kind == control])
    backend.add_tokens([AddedToken(t, normalized=False) for t, kind in zip(tokens, token_types) if kind == user_defined])

    def token(key: str) -> str | None:
        index = file.field(f"tokenizer.ggml.{key}_token_id", None)
        return None if index is None else tokens[int(index)]

    bos = token("bos")
    if file.field("tokenizer.ggml.add_bos_token", False) and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokens.index(bos))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=token("eos"), unk_token=token("unknown"),
        pad_token=token("padding"), chat_template=file.field("tokenizer.chat_template", None),
        clean_up_tokenization_spaces=False)
    return tokenizer
