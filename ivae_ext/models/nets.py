"""Building blocks shared by the models: MLPs and factorized log-densities."""

from __future__ import annotations

import math

import torch
from torch import nn

from ivae_ext.noise import normal_like, uniform_like
from ivae_ext.reference import component_log_density

FAMILIES = ("gaussian", "laplace")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


ACTIVATIONS = ("lrelu", "relu", "elu", "silu", "tanh")


def make_activation(name: str, slope: float = 0.1) -> nn.Module:
    """Hidden nonlinearity: leaky ReLU with `slope`, ReLU, ELU, SiLU or tanh."""
    if name == "lrelu":
        return nn.LeakyReLU(slope)
    if name == "relu":
        return nn.ReLU()
    if name == "elu":
        return nn.ELU()
    if name == "silu":
        return nn.SiLU()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


class MLP(nn.Module):
    """Fully connected net: `n_layers` linear maps with a nonlinearity (default leaky ReLU) between
    them (none after the last)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 50, n_layers: int = 3, slope: float = 0.1,
                 activation: str = "lrelu"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        make_activation(activation, slope)  # validate
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(make_activation(activation, slope))
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def linear_layers(mlp: MLP) -> list[nn.Linear]:
    """The linear maps of an MLP, first layer first."""
    return [m for m in mlp.net if isinstance(m, nn.Linear)]


def regress(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int, seed: int) -> float:
    """Fit module(inputs) ≈ targets by Adam (lr 1e-3, minibatches of ≤ 1024 drawn with `seed`) on the
    mean squared error; returns the last minibatch's error."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    batch = min(1024, len(inputs))
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(inputs), (batch,), generator=gen)
        loss = ((module(inputs[idx]) - targets[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def add_cholesky_head(module: nn.Module, in_dim: int, latent_dim: int, hidden_dim: int, n_layers: int, slope: float,
                      activation: str = "lrelu") -> None:
    """`module.encoder_tril`: the strictly lower Cholesky entries of q's covariance, zero at init."""
    module.encoder_tril = MLP(in_dim, latent_dim * (latent_dim - 1) // 2, hidden_dim, n_layers, slope, activation)
    nn.init.zeros_(module.encoder_tril.net[-1].weight)
    module.register_buffer("_tril_index", torch.tril_indices(latent_dim, latent_dim, -1))


def add_decoder_log_var(module: nn.Module, data_dim: int, decoder_var: float, learn: bool) -> None:
    """`module.decoder_log_var` [data_dim]: a parameter when learned, else a buffer."""
    log_var = torch.full((data_dim,), math.log(decoder_var))
    if learn:
        module.decoder_log_var = nn.Parameter(log_var)
    else:
        module.register_buffer("decoder_log_var", log_var)


def log_density(z: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, family: str) -> torch.Tensor:
    """Elementwise log-density of a Gaussian (scale σ) or Laplace (scale b) at z (the formula
    lives once, in ``ivae_ext.reference.component_log_density``)."""
    return component_log_density(z, loc, log_scale, family)


def rsample(loc: torch.Tensor, log_scale: torch.Tensor, family: str) -> torch.Tensor:
    """Reparametrised draw from the factorized family (noise from ``ivae_ext.noise``: torch's global RNG
    outside a training step)."""
    if family == "gaussian":
        eps = normal_like(loc)
    elif family == "laplace":
        # inverse CDF of a standard Laplace on u ~ U(-1/2, 1/2), kept away from ±1/2
        v = uniform_like(loc).clamp(1e-6, 1 - 1e-6) - 0.5
        eps = -torch.sign(v) * torch.log1p(-2.0 * v.abs())
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return loc + torch.exp(log_scale) * eps


def gaussian_decoder_log_lik(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_var)) summed over the data dimensions, per sample [B]."""
    return (-_HALF_LOG_2PI - 0.5 * log_var - 0.5 * (x - mean) ** 2 * torch.exp(-log_var)).sum(-1)


def scale_tril(log_diag: torch.Tensor, offdiag: torch.Tensor, tril_index: torch.Tensor) -> torch.Tensor:
    """Cholesky factor [B, d, d] from log-diagonal [B, d] and strictly-lower entries [B, d(d-1)/2]."""
    batch, dim = log_diag.shape
    rows, cols = tril_index
    tril = log_diag.new_zeros(batch, dim, dim)
    tril[:, rows, cols] = offdiag
    return tril + torch.diag_embed(torch.exp(log_diag))


def correlated_gaussian_terms(loc: torch.Tensor, log_diag: torch.Tensor, chol: torch.Tensor):
    """For q = N(loc, LLᵀ): a reparametrised draw z, the marginal log-scales, and the KL correction.

    KL(q ‖ any factorized p) = Σ_j KL(q_j ‖ p_j) + Σ_j (log σ_j − log L_jj): the fused KL op takes
    the marginals q_j; the second sum (q's own total correlation, ≥ 0) is the correction.
    """
    marginal_log_scale = 0.5 * torch.log((chol * chol).sum(-1))
    z = loc + (chol @ normal_like(loc).unsqueeze(-1)).squeeze(-1)
    return z, marginal_log_scale, (marginal_log_scale - log_diag).sum(-1)
