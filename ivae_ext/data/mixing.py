"""Mixings for independent mechanism analysis (IMA): seeded, invertible-in-practice maps f from
sources s [N, n] to observations x [N, D] with their exact Jacobians ∂x/∂s [N, D, n].

- ``MoebiusMixing``: f(s) = A (s − a) / ‖s − a‖² − shift, A orthogonal, the pole a outside the
  source cube (|a_i| > 0.5). Its Jacobian A (I − 2uuᵀ) / ‖s − a‖², u = (s − a)/‖s − a‖, is an
  orthogonal matrix times a scalar (conformal): the IMA contrast c_IMA is 0 everywhere.
- ``LinearAfterMixing``: x = L f(s) − shift with L of unit |det| and U(0, 1) entries before
  scaling, which breaks the orthogonality of the Jacobian's columns (c_IMA > 0).
- ``MLPMixing``: x = W_K ρ(… ρ(W_1 s)), ρ(h) = 0.2 h + 0.8 log(1 + e^h) (a smooth leaky ReLU, slope
  0.2) between the layers, W_k orthogonal or with U(1, 3) entries.

Every map computes in float64 (the mixing is part of the data, not of a model); ``__call__`` and
``jacobian`` take and return tensors of s's dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import ortho_group

SOURCE_DISTRIBUTIONS = ("uniform", "gaussian", "laplace")


def draw_sources(n: int, dim: int, distribution: str, rng: np.random.Generator) -> np.ndarray:
    """n independent sources: U[−0.5, 0.5]^dim, N(0, I) or Laplace(0, 1)^dim."""
    if distribution == "uniform":
        return rng.uniform(-0.5, 0.5, size=(n, dim))
    if distribution == "gaussian":
        return rng.standard_normal(size=(n, dim))
    if distribution == "laplace":
        return rng.laplace(0.0, 1.0, size=(n, dim))
    raise ValueError(f"sources must be one of {SOURCE_DISTRIBUTIONS}, got {distribution!r}")


def source_log_density(s: torch.Tensor, distribution: str) -> torch.Tensor:
    """log p(s) per row [N] of the sources ``draw_sources`` draws (float64)."""
    s = s.to(torch.float64)
    if distribution == "uniform":  # volume 1: log 1 inside the cube, −inf outside
        inside = (s.abs() <= 0.5).all(1)
        return torch.where(inside, 0.0, float("-inf")).to(torch.float64)
    if distribution == "gaussian":
        return torch.distributions.Normal(0.0, 1.0).log_prob(s).sum(1)
    if distribution == "laplace":
        return torch.distributions.Laplace(0.0, 1.0).log_prob(s).sum(1)
    raise ValueError(f"distribution must be one of {SOURCE_DISTRIBUTIONS}, got {distribution!r}")


def _orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    if dim == 1:
        return np.array([[1.0 if rng.random() < 0.5 else -1.0]])
    return ortho_group.rvs(dim, random_state=rng)


class Mixing:
    """Base: ``forward64(s)`` (float64 → float64, [N, n] → [N, D]) and ``jacobian64(s)`` [N, D, n]."""

    n_sources: int
    data_dim: int
    shift: torch.Tensor  # subtracted after the map (centres the generated data)

    def forward64(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def jacobian64(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, s: torch.Tensor) -> torch.Tensor:
        if not isinstance(s, torch.Tensor) or s.dim() != 2 or s.shape[1] != self.n_sources:
            raise ValueError(f"s must be a tensor [N, {self.n_sources}], got {getattr(s, 'shape', type(s).__name__)}")
        return s.to(torch.float64)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        return (self.forward64(self._check(s)) - self.shift).to(s.dtype)

    def jacobian(self, s: torch.Tensor) -> torch.Tensor:
        """∂x/∂s at every row of s: [N, D, n]."""
        return self.jacobian64(self._check(s)).to(s.dtype)

    def describe(self) -> dict:
        raise NotImplementedError


class MoebiusMixing(Mixing):
    """f(s) = A (s − a) / ‖s − a‖² (a Möbius transformation: conformal, in the IMA class)."""

    def __init__(self, dim: int, rng: np.random.Generator):
        if dim < 1:
            raise ValueError(f"the Möbius mixing needs dim >= 1, got {dim}")
        self.n_sources = self.data_dim = dim
        self.A = torch.as_tensor(_orthogonal(dim, rng), dtype=torch.float64)
        pole = np.empty(dim)
        for i in range(dim):  # each coordinate outside [−0.5, 0.5]: the pole lies outside the source cube
            v = rng.standard_normal()
            while abs(v) <= 0.5:
                v = rng.standard_normal()
            pole[i] = v
        self.pole = torch.as_tensor(pole, dtype=torch.float64)
        self.shift = torch.zeros(dim, dtype=torch.float64)

    def forward64(self, s):
        r = s - self.pole
        return (r / (r * r).sum(-1, keepdim=True)) @ self.A.T

    def jacobian64(self, s):
        r = s - self.pole
        sq = (r * r).sum(-1)  # [N]
        eye = torch.eye(self.n_sources, dtype=torch.float64)
        reflection = eye - 2.0 * r.unsqueeze(-1) * r.unsqueeze(-2) / sq[:, None, None]
        return (self.A @ reflection) / sq[:, None, None]

    def describe(self):
        return {"kind": "moebius", "A": self.A.tolist(), "pole": self.pole.tolist()}


def unit_det_matrix(dim: int, rng: np.random.Generator, max_condition: float = 1e3) -> np.ndarray:
    """U(0, 1)^{dim×dim} entries, redrawn until its condition number is below max_condition, then
    scaled to |det| = 1."""
    while True:
        m = rng.uniform(0.0, 1.0, size=(dim, dim))
        if np.linalg.cond(m) < max_condition:
            return m / abs(np.linalg.det(m)) ** (1.0 / dim)


class LinearAfterMixing(Mixing):
    """x = L inner(s): a linear map of unit |det| after another mixing (breaks conformality)."""

    def __init__(self, inner: Mixing, rng: np.random.Generator):
        self.inner = inner
        self.n_sources, self.data_dim = inner.n_sources, inner.data_dim
        self.L = torch.as_tensor(unit_det_matrix(inner.data_dim, rng), dtype=torch.float64)
        self.shift = torch.zeros(self.data_dim, dtype=torch.float64)

    def forward64(self, s):
        return self.inner.forward64(s) @ self.L.T

    def jacobian64(self, s):
        return self.L @ self.inner.jacobian64(s)

    def describe(self):
        return {"kind": "moebius_linear", "inner": self.inner.describe(), "L": self.L.tolist()}


def smooth_leaky_relu(h: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    return slope * h + (1.0 - slope) * torch.nn.functional.softplus(h)


def smooth_leaky_relu_derivative(h: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    return slope + (1.0 - slope) * torch.sigmoid(h)


class MLPMixing(Mixing):
    """x = W_K ρ(W_{K−1} … ρ(W_1 s)) with the smooth leaky ReLU ρ (slope 0.2) between layers;
    square layers (D = n), weights orthogonal or U(1, 3)."""

    def __init__(self, dim: int, rng: np.random.Generator, layers: int = 3, weights: str = "orthogonal"):
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if weights not in ("orthogonal", "uniform"):
            raise ValueError(f"weights must be 'orthogonal' or 'uniform', got {weights!r}")
        self.n_sources = self.data_dim = dim
        self.weights_kind = weights
        draw = (lambda: _orthogonal(dim, rng)) if weights == "orthogonal" else (
            lambda: rng.uniform(1.0, 3.0, size=(dim, dim)))
        self.W = [torch.as_tensor(draw(), dtype=torch.float64) for _ in range(layers)]
        self.shift = torch.zeros(dim, dtype=torch.float64)

    def forward64(self, s):
        h = s @ self.W[0].T
        for W in self.W[1:]:
            h = smooth_leaky_relu(h) @ W.T
        return h

    def jacobian64(self, s):
        h = s @ self.W[0].T
        J = self.W[0].expand(s.shape[0], -1, -1)
        for W in self.W[1:]:
            J = W @ (smooth_leaky_relu_derivative(h).unsqueeze(-1) * J)
            h = smooth_leaky_relu(h) @ W.T
        return J

    def describe(self):
        return {"kind": "mlp", "weights": self.weights_kind, "W": [w.tolist() for w in self.W]}


MIXINGS = ("moebius", "moebius_linear", "mlp")


def make_mixing(kind: str, dim: int, rng: np.random.Generator, mlp_weights: str = "orthogonal",
                mlp_layers: int = 3) -> Mixing:
    if kind == "moebius":
        return MoebiusMixing(dim, rng)
    if kind == "moebius_linear":
        return LinearAfterMixing(MoebiusMixing(dim, rng), rng)
    if kind == "mlp":
        return MLPMixing(dim, rng, layers=mlp_layers, weights=mlp_weights)
    raise ValueError(f"mixing must be one of {MIXINGS}, got {kind!r}")


def centre(mixing: Mixing, s: torch.Tensor) -> None:
    """Set the mixing's shift to the mean of f(s) over s, so that the data are centred."""
    mixing.shift = mixing.forward64(s.to(torch.float64)).mean(0)


__all__ = ["SOURCE_DISTRIBUTIONS", "MIXINGS", "Mixing", "MoebiusMixing", "LinearAfterMixing", "MLPMixing",
           "draw_sources", "source_log_density", "make_mixing", "centre", "unit_det_matrix", "smooth_leaky_relu"]
