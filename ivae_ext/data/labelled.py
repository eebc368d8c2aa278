"""A user's .npz for the decomposition VAE: ``x`` plus, for scoring, optional ``labels`` (cluster
per row, for clustering accuracy) and/or ``factors`` (generative factors per row, for the
disentanglement score and MCC). Each error names the key that is wrong."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ivae_ext.data.npz import DataFormatError, _check_finite, _float_matrix, read_npz

__all__ = ["LabelledData", "load_labelled_npz"]


@dataclass(frozen=True)
class LabelledData:
    """x [N, D] or images [N, C, H, W] (float32); labels [N] int64 or None; factors [N, k] float32 or None."""

    x: torch.Tensor
    labels: torch.Tensor | None
    factors: torch.Tensor | None
    name: str


def _x_array(arr: np.ndarray, path: str) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype.kind == "c":
        raise DataFormatError(f"{path}: 'x' must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 3:  # [N, H, W] grey images
        arr = arr[:, None]
    if arr.ndim not in (2, 4) or len(arr) == 0 or 0 in arr.shape:
        raise DataFormatError(f"{path}: 'x' must be [N, D], [N, H, W] or [N, C, H, W] with N, D >= 1, got shape {arr.shape}")
    arr = arr.astype(np.float32)
    _check_finite("x", arr.reshape(len(arr), -1), path)
    return arr


def _labels_array(arr: np.ndarray, n: int, path: str) -> np.ndarray:
    if arr.ndim != 1 or len(arr) != n:
        raise DataFormatError(f"{path}: 'labels' must be 1-D [N] with N = {n} (the rows of 'x'), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype.kind == "c":
        raise DataFormatError(f"{path}: 'labels' must be integers, got dtype {arr.dtype}")
    if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        raise DataFormatError(f"{path}: 'labels' must be integers; rows {bad[:5].tolist()} are not (NaN, inf or fractional)")
    return arr.astype(np.int64)


def load_labelled_npz(path: str) -> LabelledData:
    """Read x and the optional labels / factors; rows must match and every value be finite."""
    arrays = read_npz(path, ("x",), "x [N, D] or images [N, (C,) H, W], optionally labels [N] and factors [N, k]")
    x = _x_array(arrays["x"], path)
    labels = _labels_array(arrays["labels"], len(x), path) if "labels" in arrays else None
    factors = None
    if "factors" in arrays:
        factors = _float_matrix("factors", arrays["factors"], path)
        if len(factors) != len(x):
            raise DataFormatError(f"{path}: 'factors' must have N = {len(x)} rows (as 'x'), got {len(factors)}")
        _check_finite("factors", factors, path)
    return LabelledData(torch.as_tensor(x), None if labels is None else torch.as_tensor(labels),
                        None if factors is None else torch.as_tensor(factors), os.path.basename(path))
