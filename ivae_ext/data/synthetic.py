"""Piecewise-stationary nonlinear ICA data ("TCL" data): the iVAE paper's synthetic benchmark.

Sources are independent within each of M segments, with a per-segment scale (and optionally a
per-segment mean) for every component; u is the segment index. An L-layer MLP of well-conditioned
random matrices mixes them: x = A_L φ(… φ(A_1 s)), with no nonlinearity after the last layer.
Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``: same seed, same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SOURCE_DISTS = ("gauss", "laplace")
ACTIVATIONS = ("xtanh", "lrelu")


@dataclass
class NonlinearICAData:
    """x [N, D] observations, u [N, M] one-hot segments, s [N, n] true sources (float32)."""

    x: np.ndarray
    u: np.ndarray
    s: np.ndarray
    labels: np.ndarray  # [N] int segment index
    scales: np.ndarray  # [M, n] per-segment source scale
    means: np.ndarray  # [M, n] per-segment source mean (zeros unless segment_means)
    mixing: list = field(default_factory=list)  # the L matrices, first layer first


def _unit_column_matrix(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.uniform(-1.0, 1.0, size=(dim, dim))
    return a / np.linalg.norm(a, axis=0, keepdims=True)


def condition_threshold(dim: int, quantile: float = 0.25, draws: int = 2000, seed: int = 0) -> float:
    """The `quantile` of condition numbers of random unit-column matrices: draws above it are rejected.

    Uses its own generator so that the threshold does not depend on (or consume) the data seed.
    """
    rng = np.random.default_rng(seed)
    conds = [np.linalg.cond(_unit_column_matrix(rng, dim)) for _ in range(draws)]
    return float(np.quantile(conds, quantile))


def well_conditioned_matrix(rng: np.random.Generator, dim: int, max_cond: float) -> np.ndarray:
    """A [dim, dim] matrix with unit-norm columns and condition number ≤ max_cond (rejection sampling)."""
    for _ in range(100_000):
        a = _unit_column_matrix(rng, dim)
        if np.linalg.cond(a) <= max_cond:
            return a
    raise RuntimeError(f"no {dim}x{dim} matrix with condition number <= {max_cond} in 100000 draws")


def activation_fn(name: str, slope: float):
    if name == "xtanh":
        return lambda h: np.tanh(h) + slope * h
    if name == "lrelu":
        return lambda h: np.where(h > 0, h, slope * h)
    raise ValueError(f"mixing activation must be one of {ACTIVATIONS}, got {name!r}")


def make_nonlinear_ica(
    n_sources: int = 5,
    n_segments: int = 40,
    per_segment: int = 1000,
    mixing_layers: int = 3,
    activation: str = "xtanh",
    slope: float = 0.1,
    source_dist: str = "gauss",
    segment_means: bool = False,
    scale_bounds: tuple[float, float] = (0.5, 3.0),
    mean_bound: float = 5.0,
    reuse_matrix: bool = False,
    seed: int = 0,
) -> NonlinearICAData:
    """Draw a nonlinear ICA data set; deterministic in all arguments.

    Per segment m and component j: s = mean[m, j] + scale[m, j] * e with e standard Gaussian or
    Laplace of unit variance, scale ~ U(scale_bounds), mean ~ U(±mean_bound) if segment_means.
    Mixing: `mixing_layers` square matrices with unit columns and condition number below the
    first quartile of random draws; distinct per layer unless reuse_matrix (the original code's
    generator). x and s are float32, rows ordered by segment.
    """
    if source_dist not in SOURCE_DISTS:
        raise ValueError(f"source_dist must be one of {SOURCE_DISTS}, got {source_dist!r}")
    act = activation_fn(activation, slope)
    if min(n_sources, n_segments, per_segment, mixing_layers) < 1:
        raise ValueError("n_sources, n_segments, per_segment and mixing_layers must all be >= 1")
    rng = np.random.default_rng(seed)
    n = n_segments * per_segment
    scales = rng.uniform(scale_bounds[0], scale_bounds[1], size=(n_segments, n_sources))
    means = (
        rng.uniform(-mean_bound, mean_bound, size=(n_segments, n_sources))
        if segment_means
        else np.zeros((n_segments, n_sources))
    )
    if source_dist == "gauss":
        noise = rng.standard_normal((n, n_sources))
    else:
        noise = rng.laplace(0.0, 1.0 / np.sqrt(2.0), size=(n, n_sources))
    labels = np.repeat(np.arange(n_segments), per_segment)
    s = means[labels] + scales[labels] * noise

    max_cond = condition_threshold(n_sources)
    if reuse_matrix:
        mixing = [well_conditioned_matrix(rng, n_sources, max_cond)] * mixing_layers
    else:
        mixing = [well_conditioned_matrix(rng, n_sources, max_cond) for _ in range(mixing_layers)]
    h = s
    for layer, a in enumerate(mixing):
        h = h @ a
        if layer < mixing_layers - 1:
            h = act(h)
    u = np.eye(n_segments, dtype=np.float32)[labels]
    return NonlinearICAData(
        x=h.astype(np.float32),
        u=u,
        s=s.astype(np.float32),
        labels=labels,
        scales=scales,
        means=means,
        mixing=[a.copy() for a in mixing],
    )
