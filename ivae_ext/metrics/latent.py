r"""Per-latent diagnostics of posterior collapse: active units, the KL to the prior per latent,
and the decoder's sensitivity to each latent.

A collapsed latent j has q(z_j | x) ≈ p(z_j) for every x: its posterior mean does not move with x
(AU), its KL term is ≈ 0, and the decoder ignores it (sensitivity ≈ 0). The three measure the
same failure from the encoder's and the decoder's side; the mutual information over the whole
set is ``ivae_ext.metrics.mutual_information``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ivae_ext.metrics.information import posterior_parameters
from ivae_ext.ops import expfam_kl

__all__ = ["ActiveUnits", "active_units", "kl_per_latent", "decoder_sensitivity"]


@dataclass(frozen=True)
class ActiveUnits:
    """``count`` latents whose posterior mean varies over the data set by at least ``threshold``;
    ``variances`` [d] are those variances (float64). ``int(au)`` is the count."""

    count: int
    variances: torch.Tensor
    threshold: float

    def __int__(self) -> int:
        return self.count


def active_units(posteriors, x=None, *, u=None, threshold: float = 0.01, chunk_size: int = 4096) -> ActiveUnits:
    """Active units (Burda et al. 2016; the form of He et al. 2019): latent j is active when
    Var_x(E_q[z_j | x]) ≥ threshold (0.01), the variance over the given set with the N − 1
    denominator.

    ``posteriors``: a (q_loc, q_log_scale) pair of [N, d] tensors (only q_loc is used), or a
    model with ``encode`` plus its data ``x`` (and ``u`` for a conditional model), as
    ``mutual_information`` takes them. N ≥ 2.
    """
    fname = "active_units"
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"{fname}: threshold must be a number >= 0, got {threshold!r}")
    with torch.no_grad():
        q_loc, _, _ = posterior_parameters(fname, posteriors, x, u, None, chunk_size)
    if q_loc.shape[0] < 2:
        raise ValueError(f"{fname}: the variance over the set needs at least 2 points, got {q_loc.shape[0]}")
    variances = q_loc.double().var(dim=0, correction=1).cpu()
    return ActiveUnits(int((variances >= threshold).sum()), variances, float(threshold))


def kl_per_latent(posteriors, x=None, *, u=None, family: str | None = None, chunk_size: int = 4096) -> torch.Tensor:
    """Mean over the set of KL(q(z_j | x) ‖ p(z_j)) per latent j, [d] float64, against the standard
    prior of the family (N(0, 1), or Laplace(0, 1)), analytic (``ivae_ext.ops.expfam_kl``). Their
    sum is the ELBO's KL term for a factorized posterior. Inputs as ``active_units``."""
    with torch.no_grad():
        q_loc, q_log_scale, family = posterior_parameters("kl_per_latent", posteriors, x, u, family, chunk_size)
        kl = expfam_kl(q_loc, q_log_scale, 0.0, 0.0, family=family, reduction="none")
    return kl.double().mean(dim=0).cpu()


def decoder_sensitivity(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *,
                        chunk_size: int = 1024) -> torch.Tensor:
    """Mean over the points of ‖∂ decode(z)/∂z_j‖₂ per latent j, [d] float64: the norm of the
    decoder Jacobian's column j, averaged over z (typically the posterior means of a set).

    ``decode`` maps [n, d] to [n, D] row by row (e.g. a model's decoder mean). The Jacobian is
    built by D reverse-mode passes per chunk of points (first derivatives only, so decoders made
    of the fused ops, which have no forward-mode rule, work too); cost O(D · decoder backward).
    """
    fname = "decoder_sensitivity"
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] == 0:
        shape = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{fname}: z must be a tensor [n, d] with n >= 1, got {shape}")
    if not z.is_floating_point():
        raise TypeError(f"{fname}: z must be a floating-point tensor, got dtype {z.dtype}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fname}: chunk_size must be an int >= 1, got {chunk_size!r}")
    total = torch.zeros(z.shape[1], dtype=torch.float64)
    for start in range(0, z.shape[0], chunk_size):
        zc = z[start:start + chunk_size].detach().requires_grad_(True)
        with torch.enable_grad():
            out = decode(zc)
            if out.dim() != 2 or out.shape[0] != zc.shape[0]:
                raise ValueError(
                    f"{fname}: decode must map [n, d] to [n, D], got {list(out.shape)} for input {list(zc.shape)}"
                )
            squared = torch.zeros_like(zc, dtype=torch.float64)
            for i in range(out.shape[1]):  # row i of every point's Jacobian at once (points are independent)
                (row,) = torch.autograd.grad(out[:, i].sum(), zc, retain_graph=i + 1 < out.shape[1])
                squared += row.double() ** 2
        total += squared.sqrt().sum(dim=0).cpu()
    return total / z.shape[0]
