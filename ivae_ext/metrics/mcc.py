"""Mean correlation coefficient (MCC) between recovered latents and true sources."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

METHODS = ("pearson", "spearman")


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"mcc expects 2-D arrays [N, dim], got shape {a.shape}")
    return a


def correlation_matrix(z, s, method: str = "pearson") -> np.ndarray:
    """|corr(z_i, s_j)| as a [dim_z, dim_s] array (constant columns correlate 0)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    z, s = _as_numpy(z), _as_numpy(s)
    if len(z) != len(s):
        raise ValueError(f"z and s must have the same number of rows, got {len(z)} and {len(s)}")
    if method == "spearman":
        z = np.apply_along_axis(rankdata, 0, z)
        s = np.apply_along_axis(rankdata, 0, s)
    z = z - z.mean(0)
    s = s - s.mean(0)
    zn = np.linalg.norm(z, axis=0)
    sn = np.linalg.norm(s, axis=0)
    denom = np.outer(zn, sn)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, (z.T @ s) / np.where(denom > 0, denom, 1.0), 0.0)
    return np.abs(corr)


def mcc(z, s, method: str = "pearson") -> tuple[float, np.ndarray]:
    """Mean absolute correlation after the optimal one-to-one matching of z's and s's columns.

    Returns (score, matching) where matching[j] is the column of z matched to source j
    (−1 if z has fewer columns than s; unmatched sources count as 0 in the mean).
    """
    corr = correlation_matrix(z, s, method)
    rows, cols = linear_sum_assignment(-corr)
    matching = -np.ones(corr.shape[1], dtype=np.int64)
    matching[cols] = rows
    score = float(corr[rows, cols].sum() / corr.shape[1])
    return score, matching
