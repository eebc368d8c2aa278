r"""Independent mechanism analysis (IMA, Gresele et al. 2021): the local contrast of a map's
Jacobian J = ∂f/∂z [D, n] at a point,

    c_IMA(J) = Σ_k log ‖J_{:,k}‖ − ½ log det(JᵀJ)     (= Σ_k log ‖J_{:,k}‖ − log |det J| for D = n),

which is ≥ 0 (Hadamard's inequality) and 0 exactly when J's columns are orthogonal, and the global
C_IMA = E_z[c_IMA(J(z))], the mean of the pointwise contrasts (not the contrast of a mean
Jacobian). Everything here computes in float64.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["cima", "global_cima", "jacobians", "log_volume"]


def _checked(jacobians, who: str) -> torch.Tensor:
    if not isinstance(jacobians, torch.Tensor) or jacobians.dim() not in (2, 3):
        raise ValueError(f"{who}: jacobians must be a tensor [N, D, n] or [D, n], got "
                         f"{getattr(jacobians, 'shape', type(jacobians).__name__)}")
    D, n = jacobians.shape[-2:]
    if n == 0 or D < n:
        raise ValueError(f"{who}: each Jacobian must be D × n with D >= n >= 1 (an injective map), got {D} × {n}")
    J = jacobians.to(torch.float64)
    if not torch.isfinite(J).all():
        raise ValueError(f"{who}: jacobians contain NaN or inf")
    return J


def _log_volume(J: torch.Tensor) -> torch.Tensor:
    D, n = J.shape[-2:]
    if D == n:
        return torch.linalg.slogdet(J)[1]
    return 0.5 * torch.linalg.slogdet(J.transpose(-1, -2) @ J)[1]


def log_volume(jacobians: torch.Tensor) -> torch.Tensor:
    """log|det J| (½ log det JᵀJ for D > n) per Jacobian [N, D, n] (or one [D, n]), float64: the
    change of volume of the map, so log p(x) = log p(s) − log_volume(J) for x = f(s)."""
    return _log_volume(_checked(jacobians, "log_volume"))


def cima(jacobians: torch.Tensor) -> torch.Tensor:
    """Pointwise c_IMA of Jacobians [N, D, n] (or one [D, n]) with D >= n, in float64: [N] (or [])."""
    J = _checked(jacobians, "cima")
    return torch.linalg.vector_norm(J, dim=-2).log().sum(-1) - _log_volume(J)


def jacobians(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """∂fn/∂z at every row of z [N, n]: [N, D, n], by torch.func (vmap of jacrev), in chunks.

    fn maps one point [n] to [D] and must be written for batches too (any nn.Module decoder
    is); evaluate it in float64 for the contrast (e.g. on a float64 copy of the module)."""
    from torch.func import jacrev, vmap

    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] == 0:
        raise ValueError(f"jacobians: z must be a tensor [N, n] with N >= 1, got {getattr(z, 'shape', None)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"jacobians: chunk_size must be an int >= 1, got {chunk_size!r}")
    per_point = vmap(jacrev(lambda v: fn(v.unsqueeze(0)).squeeze(0)))
    return torch.cat([per_point(z[i:i + chunk_size]).detach() for i in range(0, z.shape[0], chunk_size)])


def global_cima(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, chunk_size: int = 4096) -> tuple[float, torch.Tensor]:
    """(mean pointwise c_IMA, the pointwise values [N]) of fn over the points z."""
    values = cima(jacobians(fn, z, chunk_size))
    return float(values.mean()), values
