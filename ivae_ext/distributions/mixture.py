r"""The Gaussian-mixture prior of the clustering experiment, with its *joint* log-density.

log p(z) = logsumexp_k [log w_k + Σ_i log N(z_i; m_ki, s_ki²)] over z [..., d] -> [...]. The anchor's
Monte-Carlo KL broadcast this joint value against per-dimension log q and summed, subtracting
log p(z) once per dimension; here log_prob is only ever the joint value (event_shape (d,)).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from ivae_ext.distributions._checks import (
    as_float_tensor,
    check_broadcast_exact,
    check_dim,
    check_finite,
    check_positive,
)

__all__ = ["GaussianMixture", "GaussianMixturePrior", "circle_means"]


class GaussianMixture(Distribution):
    """Σ_k w_k N(means_k, diag(scales_k²)) over R^d; batch_shape (), event_shape (d,).

    means [K, d]; scales broadcastable to [K, d] by torch's rules (a scalar is one shared isotropic
    scale, [K, 1] one isotropic scale per component, [K, d] per-component diagonal); weights [K]
    (default equal). ``rsample`` picks components without gradient and moves the draw with the
    means and scales (the pathwise gradient given the component); weights get no gradient.
    """

    arg_constraints = {"means": constraints.real, "scales": constraints.positive, "weights": constraints.simplex}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, means: torch.Tensor, scales=1.0, weights=None, validate_args=None):
        means = as_float_tensor("means", means)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must be a [K, d] tensor with K, d >= 1, got shape {tuple(means.shape)}")
        check_finite("means", means)
        k, d = means.shape
        scales = check_broadcast_exact("scales", as_float_tensor("scales", scales, like=means), (k, d))
        check_positive("scales", scales)
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype, device=means.device)
        weights = as_float_tensor("weights", weights, like=means)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape [K] = [{k}] (one per row of means), got {tuple(weights.shape)}")
        if not bool(((weights >= 0).all()) & (weights.sum() - 1).abs().lt(1e-5)):
            raise ValueError(f"weights must be >= 0 and sum to 1, got {weights.detach().tolist()}")
        self.means, self.scales, self.weights = means, scales, weights
        super().__init__(torch.Size(), torch.Size([d]), validate_args=validate_args)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def component_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(value; means_k, scales_k²) for every component: [..., d] -> [..., K]."""
        if self._validate_args:
            self._validate_sample(value)
        z = value.unsqueeze(-2)  # [..., 1, d]
        per_dim = -0.5 * ((z - self.means) / self.scales) ** 2 - self.scales.log() - 0.5 * math.log(2 * math.pi)
        return per_dim.sum(-1) + self.weights.log()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(value), dim=-1)

    def responsibilities(self, value: torch.Tensor) -> torch.Tensor:
        """p(k | z) [..., K]: the posterior over components, for clustering a code."""
        return torch.softmax(self.component_log_prob(value), dim=-1)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        k = torch.multinomial(self.weights.detach(), max(1, shape.numel()), replacement=True)[: shape.numel()]
        eps = torch.randn((shape.numel(), self.event_shape[0]), dtype=self.means.dtype, device=self.means.device)
        return (self.means[k] + self.scales[k] * eps).reshape(shape + self.event_shape)

    @property
    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    @property
    def variance(self) -> torch.Tensor:
        return self.weights @ (self.scales**2 + self.means**2) - self.mean**2

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != torch.Size():
            raise NotImplementedError("GaussianMixture has batch_shape (); broadcast its log_prob instead")
        return self

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.event_shape[0]})"


def circle_means(k: int, radius: float = 1.0, phase: float = 0.0) -> torch.Tensor:
    """[k, 2] points radius·(cos θ_j, sin θ_j), θ_j = phase + 2πj/k.

    circle_means(4) is the anchor's pinwheel prior, means (1, 0), (0, 1), (−1, 0), (0, −1) (the
    anchor lists them in another order, which does not matter for a mixture).
    """
    k = check_dim("k", k)
    check_positive("radius", as_float_tensor("radius", radius))
    theta = phase + 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    return (radius * torch.stack([theta.cos(), theta.sin()], dim=1)).to(torch.get_default_dtype())


class GaussianMixturePrior(nn.Module):
    """A GaussianMixture with equal weights whose means and/or scales may be learned.

    means [K, d] initial means; scale a positive scalar (shared isotropic) or [K, d]-broadcastable
    tensor; ``per_component_scale=True`` stores one diagonal scale per component ([K, d]). Scales
    are stored as logs so they stay positive. Calling the module returns the distribution.
    The anchor's pinwheel prior: ``GaussianMixturePrior(circle_means(4), scale=0.03 ** 0.5)``.
    """

    def __init__(self, means, scale=1.0, learn_means: bool = False, learn_scale: bool = False,
                 per_component_scale: bool = False):
        super().__init__()
        means = as_float_tensor("means", means).detach().clone()
        if means.ndim != 2:
            raise ValueError(f"means must be a [K, d] tensor, got shape {tuple(means.shape)}")
        check_finite("means", means)
        scale_t = as_float_tensor("scale", scale, like=means).detach()
        check_positive("scale", scale_t)
        shape = means.shape if per_component_scale else ()
        if scale_t.ndim and not per_component_scale:
            raise ValueError(f"scale must be a scalar unless per_component_scale=True, got shape {tuple(scale_t.shape)}")
        log_scale = check_broadcast_exact("scale", scale_t, tuple(shape)).log().clone()
        for name, value, learn in (("means", means, learn_means), ("log_scale", log_scale, learn_scale)):
            if learn:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def forward(self) -> GaussianMixture:
        scales = self.log_scale.exp()
        return GaussianMixture(self.means, scales if scales.ndim else scales.expand(self.means.shape))
