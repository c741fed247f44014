"""jaxprune: greedy pruning of LLM reasoning tokens in JAX.

    import jaxprune
    pruner = jaxprune.Pruner("packaged:SmolLM2-135M-Instruct")
    record = pruner.prune(question=..., reasoning=..., answer=..., keep_ratio=0.7)

`Pruner` (`jaxprune/api.py`) is imported on first use, so `import jaxprune` stays light (no JAX).
"""

import glob as _glob
import importlib.util as _importlib_util
import os as _os

__version__ = "0.1.0"


def _keep_libtpu_quiet() -> None:
    """With `libtpu` installed (the `tpu` extra, e.g. for the compile check) but no TPU chips on this machine, JAX
    would start the TPU runtime anyway, which prints start-up errors and may ask a metadata server. Where there are
    neither TPU nor NVIDIA devices, run on the CPU and ask no server; a TPU or GPU machine is left alone, and so is a
    JAX_PLATFORMS the user set. Runs before jax is imported by any jaxprune module."""
    if _importlib_util.find_spec("libtpu") is None or _glob.glob("/dev/accel*") or _glob.glob("/dev/vfio/[0-9]*"):
        return
    _os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    if "JAX_PLATFORMS" not in _os.environ and not _glob.glob("/dev/nvidia[0-9]*"):
        _os.environ["JAX_PLATFORMS"] = "cpu"


_keep_libtpu_quiet()


__all__ = ["Pruner", "__version__"]


def __getattr__(name: str):
    if name == "Pruner":
        from jaxprune.api import Pruner

        return Pruner
    raise AttributeError(f"module 'jaxprune' has no attribute {name!r}")
