"""Loads the compiled ops (ivae_ext._C); without them the package runs on the reference."""

from __future__ import annotations

import warnings

import torch

try:
    from ivae_ext import _C  # noqa: F401  (importing registers torch.ops.ivae_ext.*)

    HAS_EXTENSION = True
    _IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - exercised only in broken installs
    _C = None
    HAS_EXTENSION = False
    _IMPORT_ERROR = str(error)
    warnings.warn(
        "ivae_ext: the compiled extension ivae_ext._C could not be imported "
        f"({error}); every op falls back to the pure-PyTorch reference (slow). "
        "Reinstall with `pip install --no-build-isolation .` to build it.",
        RuntimeWarning,
        stacklevel=2,
    )


def build_info() -> dict:
    """What was compiled: CPU/CUDA kernels, CUDA arch list, torch and CUDA versions."""
    if not HAS_EXTENSION:
        return {
            "compiled": False,
            "cpu": False,
            "cuda": False,
            "error": _IMPORT_ERROR,
            "torch_runtime": torch.__version__,
        }
    info = dict(_C.build_info())
    info["compiled"] = True
    info["torch_runtime"] = torch.__version__
    return info
