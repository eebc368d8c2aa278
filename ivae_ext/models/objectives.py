"""The two training objectives of the iVAE-style models.

Both take the pieces a model computes for one minibatch and return a dict of per-batch scalars:
"loss" (to minimise) and named terms. Conventions: log-densities are summed over dimensions.
"""

from __future__ import annotations

import math

import torch

from ivae_ext.models.nets import log_density
from ivae_ext.ops import aggregate_log_q, expfam_kl


def elbo_objective(log_px_z, q_loc, q_log_scale, p_loc, p_log_scale, family: str, beta: float = 1.0,
                   kl_extra=None, q_family: str | None = None):
    """Negative ELBO: −E_q log p(x|z) + β KL(q(z|·) ‖ p(z|·)), the KL analytic.

    `family` is the prior's, `q_family` the posterior's (default: the same). Same family: the
    fused op ``expfam_kl``; a Gaussian posterior under a Laplace prior: ``gaussian_laplace_kl``.
    kl_extra [B] is added to the KL (a correlated posterior's part the factorized KL does not see).
    """
    q_family = q_family or family
    if q_family == family:
        kl = expfam_kl(q_loc, q_log_scale, p_loc, p_log_scale, family=family, reduction="sum")
    elif (q_family, family) == ("gaussian", "laplace"):
        kl = gaussian_laplace_kl(q_loc, q_log_scale, p_loc, p_log_scale).sum(-1)
    else:
        raise ValueError(f"no analytic KL from a {q_family} posterior to a {family} prior")
    if kl_extra is not None:
        kl = kl + kl_extra
    recon = -log_px_z.mean()
    kl = kl.mean()
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl}


def gaussian_laplace_kl(q_loc, q_log_scale, p_loc, p_log_scale):
    """Elementwise KL(N(m, σ²) ‖ Laplace(μ, b)), [B, d]; σ = exp(q_log_scale), b = exp(p_log_scale).

    KL = −½ log(2πe) − log σ + log(2b) + E|z − μ| / b, with the Gaussian's mean absolute deviation
    E|z − μ| = σ √(2/π) exp(−δ²/2σ²) + δ erf(δ/(σ√2)), δ = m − μ. Lets a Gaussian posterior (with a
    full covariance, which removes the mean-field bias) sit under a Laplace prior.
    """
    sigma = torch.exp(q_log_scale)
    delta = q_loc - p_loc
    ratio = delta / sigma
    mean_abs = sigma * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * ratio * ratio) + delta * torch.erf(ratio / math.sqrt(2.0))
    return (math.log(2.0) - 0.5 * math.log(2.0 * math.pi * math.e)) - q_log_scale + p_log_scale + mean_abs * torch.exp(-p_log_scale)


def minibatch_log_q(z, q_loc, q_log_scale, family: str, dataset_size: int):
    """Minibatch-weighted estimates of log q(z) and Σ_j log q(z_j) at each sample z_i, [B] each.

    log q(z_i) ≈ logsumexp_k log q(z_i | x_k) − log(B·N), and per dimension likewise (β-TCVAE's
    minibatch-weighted sampling; N = dataset_size). The mixture over the batch's posteriors is
    the fused ``aggregate_log_q`` (its outputs carry the −log B; the −log N is added here).
    """
    log_qz, log_qz_marginals = aggregate_log_q(z, q_loc, q_log_scale, family)
    log_dataset = math.log(max(dataset_size, 1))
    return log_qz - log_dataset, (log_qz_marginals - log_dataset).sum(-1)


def weighted_objective(
    log_px_z, z, q_loc, q_log_scale, q_family, log_pz, dataset_size: int, weights=(100.0, 1.0, 0.0, 10.0)
):
    """−[a·log p(x|z) − b·MI − c·TC − d·(Σ_j log q(z_j) − log p(z|u))], minibatch-weighted.

    MI = log q(z|x,u) − log q(z); TC = log q(z) − Σ_j log q(z_j); the last bracket is the
    dimension-wise KL to the prior. With a=b=c=d=1 this is the ELBO (up to the estimator).
    """
    a, b, c, d = weights
    log_qz_x = log_density(z, q_loc, q_log_scale, q_family).sum(-1)
    log_qz, log_qz_marg = minibatch_log_q(z, q_loc, q_log_scale, q_family, dataset_size)
    recon = -log_px_z.mean()
    mi = (log_qz_x - log_qz).mean()
    tc = (log_qz - log_qz_marg).mean()
    dwkl = (log_qz_marg - log_pz).mean()
    loss = a * recon + b * mi + c * tc + d * dwkl
    return {"loss": loss, "recon": recon, "mi": mi, "tc": tc, "dwkl": dwkl}
