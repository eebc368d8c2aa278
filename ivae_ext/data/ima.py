"""Data for the IMA-VAE experiments: sources pushed through a Möbius, Möbius + linear or MLP
mixing (``ivae_ext.data.mixing``), or a user's .npz with x [N, D] and optional s [N, n]; split
70/20/10 into train / validation / test by a seeded permutation (the anchor's split)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ivae_ext.data.mixing import MIXINGS, Mixing, centre, draw_sources, make_mixing
from ivae_ext.data.npz import DataFormatError, _check_finite, _float_matrix, read_npz

SPLIT_FRACTIONS = (0.7, 0.2, 0.1)


@dataclass
class IMAData:
    """x / s per split (float32; s None when unknown), the mixing when generated (None for files)."""

    x_train: torch.Tensor
    x_val: torch.Tensor
    x_test: torch.Tensor
    s_train: torch.Tensor | None
    s_val: torch.Tensor | None
    s_test: torch.Tensor | None
    mixing: Mixing | None
    source_distribution: str | None
    name: str

    @property
    def data_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_sources(self) -> int | None:
        return None if self.s_train is None else self.s_train.shape[1]

    def data_variance(self) -> float:
        """Mean per-dimension variance of the training x: the scale a decoder variance is relative to."""
        return float(self.x_train.double().var(0).mean())


def split_three(n: int, seed: int, fractions=SPLIT_FRACTIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train / validation / test split (each non-empty) of n rows."""
    if n < 3:
        raise ValueError(f"need at least 3 rows to split into train, validation and test, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = max(1, int(round(fractions[0] * n)))
    n_val = max(1, min(int(round(fractions[1] * n)), n - n_train - 1))
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]


def _split(x: np.ndarray, s: np.ndarray | None, seed: int):
    parts = split_three(len(x), seed)
    xs = [torch.as_tensor(x[i], dtype=torch.float32) for i in parts]
    ss = [None] * 3 if s is None else [torch.as_tensor(s[i], dtype=torch.float32) for i in parts]
    return xs, ss


def make_ima_data(mixing: str = "moebius", n_sources: int = 3, n: int = 60000, sources: str = "uniform",
                  seed: int = 1, mlp_weights: str = "orthogonal", mlp_layers: int = 3) -> IMAData:
    """n sources (U[−0.5, 0.5]^n_sources by default) through a seeded mixing, centred, split 70/20/10.

    The same seed gives the same mixing (whatever n and the source distribution), sources and split. The data's scale depends on the
    mixing (for the Möbius map, on the pole's distance to the cube): see ``IMAData.data_variance``.
    """
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
    for name, value, low in (("n_sources", n_sources, 1), ("n", n, 3)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    # separate streams: the mixing does not depend on n or on the source distribution
    mixing_rng, source_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    f = make_mixing(mixing, n_sources, mixing_rng, mlp_weights=mlp_weights, mlp_layers=mlp_layers)
    s = draw_sources(n, n_sources, sources, source_rng)
    s_t = torch.as_tensor(s, dtype=torch.float64)
    centre(f, s_t)
    x = f(s_t).numpy()
    (x_tr, x_va, x_te), (s_tr, s_va, s_te) = _split(x, s, seed)
    return IMAData(x_tr, x_va, x_te, s_tr, s_va, s_te, f, sources, f"{mixing}(d={n_sources}, seed={seed})")


def load_ima_npz(path: str, seed: int = 1) -> IMAData:
    """x [N, D] and optional true sources s [N, n] (n <= D) from an .npz, split 70/20/10 with `seed`."""
    arrays = read_npz(path, ("x",), "x [N, D] and optionally s [N, n]")
    x = _float_matrix("x", arrays["x"], path)
    _check_finite("x", x, path)
    s = None
    if "s" in arrays:
        s = _float_matrix("s", arrays["s"], path)
        if len(s) != len(x):
            raise DataFormatError(f"{path}: 's' must have x's number of rows N = {len(x)}, got {len(s)}")
        _check_finite("s", s, path)
        if s.shape[1] > x.shape[1]:
            raise DataFormatError(f"{path}: more sources than observed dimensions (s has n = {s.shape[1]}, "
                                  f"x has D = {x.shape[1]}): the mixing cannot be injective")
    if len(x) < 3:
        raise DataFormatError(f"{path}: 'x' needs at least 3 rows (train, validation, test), got {len(x)}")
    (x_tr, x_va, x_te), (s_tr, s_va, s_te) = _split(x, s, seed)
    return IMAData(x_tr, x_va, x_te, s_tr, s_va, s_te, None, None, os.path.basename(path))


def load_ima_data(spec: str, n_sources: int = 3, n: int = 60000, sources: str = "uniform", seed: int = 1,
                  mlp_weights: str = "orthogonal") -> IMAData:
    """'moebius', 'moebius_linear', 'mlp' (generated with these arguments) or PATH.npz."""
    spec = os.fspath(spec)
    if spec in MIXINGS:
        return make_ima_data(spec, n_sources=n_sources, n=n, sources=sources, seed=seed, mlp_weights=mlp_weights)
    if spec.lower().endswith(".npz"):
        return load_ima_npz(spec, seed=seed)
    raise ValueError(f"--data must be one of {MIXINGS} or a PATH.npz, got {spec!r}")
