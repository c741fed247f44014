"""Hugging Face checkpoints: read safetensors directories (single file or sharded index), write them back.

Only safetensors are read; pickle-based `.bin` / `.pt` checkpoints are refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxprune import files
from jaxprune import sharding as sharding_lib
from jaxprune.checkpoints.build import CheckpointError, ParamPath, build_model, host_tensors
from jaxprune.models.config import ModelConfig
from jaxprune.models.hf_config import load_hf_config, to_hf_dict
from jaxprune.models.llama import Llama

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MAX_SHARD_BYTES = 4 * 1024**3


def hf_tensor_name(path: ParamPath) -> tuple[str, bool]:
    """The Hugging Face name of a parameter and whether its layout is transposed (`[out, in]` there)."""
    *module, leaf = path
    if path == ("embed_tokens",):
        return "model.embed_tokens.weight", False
    prefix = "" if module == ["lm_head"] else "model."
    hf_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
    return prefix + ".".join(map(str, module + [hf_leaf])), leaf == "kernel"


def _tensor_files(directory: str) -> dict[str, str]:
    """Maps each tensor name to the safetensors file holding it."""
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: missing field 'weight_map'")
        return {name: os.path.join(directory, file) for name, file in weight_map.items()}
    single = os.path.join(directory, SINGLE_FILE)
    if os.path.isfile(single):
        with safe_open(single, framework="numpy") as f:
            return {name: single for name in f.keys()}
    pickles = sorted(name for name in os.listdir(directory) if name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(f"{os.path.join(directory, pickles[0])}: pickle checkpoints are refused (they can run "
                              "arbitrary code); convert the model to safetensors first")
    raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} found")


def _language_model_names(name: str) -> tuple[str, ...]:
    """Where an image-text model keeps the language-model tensor `name`, by the transformers version that saved it."""
    body = name.removeprefix("model.")
    return (f"model.language_model.{body}", f"language_model.model.{body}")


def load_hf_model(directory: str, *, dtype=jnp.float32, mesh: Mesh | None = None,
                  rules=sharding_lib.DEFAULT_RULES) -> Llama:
    """Loads a safetensors directory of a supported family (the language model of an image-text Gemma 3), optionally
    straight into shards on `mesh`."""
    config = load_hf_config(directory)
    files = _tensor_files(directory)
    handles: dict[str, Any] = {}

    def tensor_for(path: ParamPath) -> np.ndarray:
        name, transposed = hf_tensor_name(path)
        name = next((candidate for candidate in (name, *_language_model_names(name)) if candidate in files), name)
        if name not in files:
            raise CheckpointError(f"{directory}: tensor '{name}' is missing from the checkpoint")
        file = files[name]
        if file not in handles:
            handles[file] = safe_open(file, framework="numpy")
        tensor = handles[file].get_tensor(name)
        return tensor.T if transposed else tensor

    return build_model(config, tensor_for, dtype=dtype, mesh=mesh, rules=rules, source=directory)


def _write_atomic(path: str, write) -> None:
    temporary = path + ".tmp"
    write(temporary)
    os.replace(temporary, path)


def _write_json(path: str, data: dict) -> None:
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
    _write_atomic(path, write)


def save_hf_model(model: Llama, directory: str, tokenizer=None, *, dtype=None,
                  max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """Writes `model` (and `tokenizer`) as a Hugging Face directory that `AutoModelForCausalLM` loads.

    Every file is written under a temporary name and renamed, so an interrupted export leaves no half-written file;
    a `gs://` directory is written locally first and uploaded file by file. Call it on every process of a multi-host
    run (sharded parameters are gathered); only process 0 writes.
    """
    import jax

    if not files.is_local(directory):
        with tempfile.TemporaryDirectory() as local:
            save_hf_model(model, local, tokenizer, dtype=dtype, max_shard_bytes=max_shard_bytes)
            if jax.process_index() == 0:
                files.upload_dir(local, directory)
        return

    tensors = {}
    for path, value in host_tensors(model).items():
        name, transposed = hf_tensor_name(path)
        value = value.T if transposed else value
        tensors[name] = np.ascontiguousarray(value.astype(dtype) if dtype is not None else value)
    if jax.process_index() != 0:
        return
    os.makedirs(directory, exist_ok=True)
    shards, current, size = [], {}, 0
    for name in sorted(tensors):
        if current and size + tensors[name].nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensors[name]
        size += tensors[name].nbytes
    shards.append(current)
    if len(shards) == 1:
        _write_atomic(os.path.join(directory, SINGLE_FILE),
                      lambda temporary: save_file(shards[0], temporary, metadata={"format": "pt"}))
    else:
        weight_map = {}
        for number, shard in enumerate(shards, start=1):
            file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            _write_atomic(os.path.join(directory, file),
                          lambda temporary, shard=shard: save_file(shard, temporary, metadata={"format": "pt"}))
            weight_map.update({name: file for name in shard})
        total = sum(t.nbytes for t in tensors.values())
        _write_json(os.path.join(directory, INDEX_FILE), {"metadata": {"total_size": total}, "weight_map": weight_map})
    config: ModelConfig = model.config
    stored_dtype = next(iter(tensors.values())).dtype
    _write_json(os.path.join(directory, "config.json"), {**to_hf_dict(config), "dtype": str(stored_dtype)})
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
