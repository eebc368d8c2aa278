"""Discrete segments: recognising a one-hot u and reading its segment labels."""

from __future__ import annotations

import numpy as np


def segment_labels(u: np.ndarray) -> np.ndarray | None:
    """The segment index of every row if u is one-hot (one 1, the rest 0), else None."""
    u = np.asarray(u)
    if u.ndim != 2 or not np.all((u == 0) | (u == 1)) or not np.all(u.sum(axis=1) == 1):
        return None
    return u.argmax(axis=1)
