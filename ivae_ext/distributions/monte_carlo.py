r"""KL(q(z|x) ‖ p(z)) by Monte Carlo, for priors without a closed form (Student-t, spike-and-slab,
Gaussian mixture): mean_s [log q(z_s|x) − log p(z_s)] with z_s ~ q(z|x) reparameterised, both
log-densities *joint* over the d latent dimensions (the anchor summed a joint log p once per
dimension under the mixture prior).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution

__all__ = ["monte_carlo_kl"]


def monte_carlo_kl(q_loc: torch.Tensor, q_scale: torch.Tensor, prior: Distribution, samples=1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """KL(N(q_loc, diag(q_scale²)) ‖ prior) per point, estimated with `samples` draws: [..., d] -> [...].

    samples: a number of draws S >= 1 (drawn here, differentiable in q_loc and q_scale), or the
    draws themselves, a tensor [S, ..., d] (e.g. the ones the reconstruction term used, as the
    anchor does). prior: any distribution with event_shape (d,) whose log_prob is the joint density.
    The estimate is unbiased; its variance falls as 1/S.
    """
    if not isinstance(q_loc, torch.Tensor) or not isinstance(q_scale, torch.Tensor):
        raise TypeError("q_loc and q_scale must be tensors")
    if q_loc.ndim < 1 or q_loc.shape != q_scale.shape:
        raise ValueError(f"q_loc and q_scale must have one shape [..., d], got {tuple(q_loc.shape)} and "
                         f"{tuple(q_scale.shape)}")
    d = q_loc.shape[-1]
    if not isinstance(prior, Distribution) or tuple(prior.event_shape) != (d,):
        got = tuple(prior.event_shape) if isinstance(prior, Distribution) else type(prior).__name__
        raise ValueError(f"prior must be a Distribution with event_shape ({d},) (the latent dimension of q), "
                         f"got {got}; wrap per-dimension priors in torch.distributions.Independent")
    if isinstance(samples, torch.Tensor):
        z = samples
        if z.ndim != q_loc.ndim + 1 or z.shape[1:] != q_loc.shape:
            raise ValueError(f"samples must have shape [S, {', '.join(map(str, q_loc.shape))}], got {tuple(z.shape)}")
    else:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an int >= 1 or a tensor of draws, got {samples!r}")
        eps = torch.randn((samples, *q_loc.shape), dtype=q_loc.dtype, device=q_loc.device, generator=generator)
        z = q_loc + q_scale * eps
    # log q(z|x) written out (not Normal.log_prob) so it is joint over d by construction
    log_q = (-0.5 * ((z - q_loc) / q_scale) ** 2 - q_scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_p = prior.log_prob(z)
    if log_p.shape != log_q.shape:
        raise ValueError(f"prior.log_prob returned shape {tuple(log_p.shape)} for draws {tuple(z.shape)}; expected "
                         f"{tuple(log_q.shape)} (one joint value per draw)")
    return (log_q - log_p).mean(0)
