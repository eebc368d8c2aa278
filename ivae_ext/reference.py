"""Pure-PyTorch reference implementations: the oracle for tests, the baseline for benchmarks.

Written the way research code does it (elementwise torch ops, autograd for gradients), in the
stable forms of ../shared/DESIGN.md so that float64 comparisons are meaningful. Nothing here
calls the compiled extension.
"""

from __future__ import annotations

import torch

FAMILIES = ("gaussian", "laplace")
REDUCTIONS = ("sum", "none")


def expfam_kl(
    q_loc: torch.Tensor,
    q_log_scale: torch.Tensor,
    p_loc: torch.Tensor,
    p_log_scale: torch.Tensor,
    family: str = "gaussian",
    reduction: str = "sum",
) -> torch.Tensor:
    """KL(q || p) for factorized q and p of one family, parametrised by location and log-scale.

    q's parameters are [B, d]; p's broadcast against them. Returns [B] ("sum") or [B, d] ("none").
    """
    if family == "gaussian":
        # KL = 1/2 (expm1(t) - t) + 1/2 ((mu_q - mu_p) / sigma_p)^2,  t = 2 (l_q - l_p)
        t = 2.0 * (q_log_scale - p_log_scale)
        z = (q_loc - p_loc) * torch.exp(-p_log_scale)
        kl = 0.5 * (torch.expm1(t) - t) + 0.5 * z * z
    elif family == "laplace":
        # KL = (v - u) + expm1(w) - w,  u = |D|/b_q, v = |D|/b_p, w = l_q - l_p - u
        dist = (q_loc - p_loc).abs()
        u = dist * torch.exp(-q_log_scale)
        v = dist * torch.exp(-p_log_scale)
        w = q_log_scale - p_log_scale - u
        kl = (v - u) + (torch.expm1(w) - w)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if reduction == "sum":
        return kl.sum(-1)
    if reduction == "none":
        return kl
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
