"""Loading a user's own data from an .npz file: arrays x [N, D], u [N] labels or [N, m], optional s."""

from __future__ import annotations

import os

import numpy as np

from ivae_ext.data.synthetic import NonlinearICAData


class DataFormatError(ValueError):
    """The .npz file does not hold what ivae_ext needs; the message says what is wrong."""


def _float_matrix(name: str, arr: np.ndarray, path: str) -> np.ndarray:
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: '{name}' must be 2-D [N, dim], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(f"{path}: '{name}' must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def _check_finite(name: str, arr: np.ndarray, path: str) -> None:
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise DataFormatError(
            f"{path}: '{name}' has {len(rows)} row(s) with NaN or inf values (rows {shown}); "
            "drop or impute them first"
        )


def labels_to_onehot(labels: np.ndarray, path: str = "u") -> tuple[np.ndarray, np.ndarray]:
    """Integer segment labels [N] -> (one-hot [N, M] float32, label index [N])."""
    if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
        raise DataFormatError(f"{path}: 1-D 'u' must hold integer segment labels")
    values, index = np.unique(labels.astype(np.int64), return_inverse=True)
    return np.eye(len(values), dtype=np.float32)[index], index


def read_npz(path: str, required: tuple[str, ...], expected: str) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path` (no pickles), after checking that it exists, is readable
    and holds the `required` arrays; `expected` describes the format for the error message."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npz file ({exc})") from exc
    for key in required:
        if key not in arrays:
            raise DataFormatError(f"{path}: missing required array '{key}' (found: "
                                  f"{', '.join(sorted(arrays)) or 'none'}); expected {expected}")
    return arrays


def load_npz(path: str) -> NonlinearICAData:
    """Read x [N, D], u ([N] integer labels -> one-hot, or [N, m] features) and optional s [N, n]."""
    arrays = read_npz(path, ("x", "u"), "x [N, D], u [N] or [N, m], optional s [N, n]")
    x = _float_matrix("x", arrays["x"], path)
    raw_u = arrays["u"]
    s = _float_matrix("s", arrays["s"], path) if "s" in arrays else None
    lengths = {"x": len(x), "u": len(raw_u)}
    if s is not None:
        lengths["s"] = len(s)
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise DataFormatError(f"{path}: arrays must have the same number of rows N, but {desc}")
    _check_finite("x", x, path)
    if raw_u.ndim == 1:
        _check_finite("u", raw_u.astype(np.float64)[:, None], path)
        u, labels = labels_to_onehot(raw_u, path)
    else:
        u = _float_matrix("u", raw_u, path)
        _check_finite("u", u, path)
        labels = np.zeros(len(u), dtype=np.int64)
    if s is not None:
        _check_finite("s", s, path)
    empty = np.zeros((0, 0))
    return NonlinearICAData(
        x=x, u=u, s=s, labels=labels, scales=empty, means=empty, mixing=[]
    )
