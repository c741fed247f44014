"""An opened GGUF file (llama.cpp): metadata fields and dequantised tensors by name, errors naming the file."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxprune.checkpoints.build import CheckpointError


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

        if name not in self.tensors:
            raise CheckpointError(f"{self.path}: tensor '{name}' is missing")
        tensor = self.tensors[name]
        return dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(
            tuple(int(d) for d in reversed(tensor.shape)))
