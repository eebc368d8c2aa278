"""iVAE: a VAE whose factorized prior p(z|u) is conditioned on an observed auxiliary variable u.

Encoder q(z|x,u): diagonal Gaussian (or the prior's family, see ``posterior``) from MLPs on [x, u]
(on x alone if ``encoder_uses_u=False``: with a learned prior mean this stops z from encoding u).
Prior p(z|u): factorized Gaussian or Laplace, location and log-scale from an MLP λ(u)
(location fixed at 0 if ``prior_mean=False``). Decoder p(x|z): Gaussian, mean from an MLP,
variance fixed or learned (one per data dimension).
"""

from __future__ import annotations


import torch
from torch import nn

from ivae_ext.models.nets import (
    add_cholesky_head,
    add_decoder_log_var,
    FAMILIES, MLP, correlated_gaussian_terms, gaussian_decoder_log_lik, log_density, rsample, scale_tril,
)
from ivae_ext.models.objectives import elbo_objective, weighted_objective

OBJECTIVES = ("elbo", "weighted")


class IVAE(nn.Module):
    """Identifiable VAE (Khemakhem et al., 2020).

    objective: "elbo" (default) — the plain ELBO with the analytic KL(q(z|x,u) ‖ p(z|u)) through
    ``ivae_ext.ops.expfam_kl``; "weighted" — the original code's decomposition −[a·log p(x|z) −
    b·MI − c·TC − d·dimension-wise KL] with minibatch estimates of q(z).
    posterior_cov: "diag" (mean field) or "full" (Gaussian with a Cholesky factor from the encoder;
    removes the mean-field gap that biases the ELBO towards column-orthogonal decoder Jacobians). For the analytic KL the
    posterior is of the prior's family (``posterior=None``) or Gaussian under a Laplace prior (the
    KL is then ``gaussian_laplace_kl``, which is what lets a Laplace prior have a full-covariance
    posterior); the weighted objective works with any.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        aux_dim: int,
        hidden_dim: int = 50,
        n_layers: int = 3,
        prior: str = "gaussian",
        prior_mean: bool = True,
        posterior: str | None = None,
        decoder_var: float = 0.1,
        learn_decoder_var: bool = False,
        objective: str = "elbo",
        weights: tuple[float, float, float, float] = (100.0, 1.0, 0.0, 10.0),
        beta: float = 1.0,
        slope: float = 0.1,
        activation: str = "lrelu",
        encoder_uses_u: bool = True,
        posterior_cov: str = "diag",
        prior_layers: int | None = None,
    ):
        super().__init__()
        if prior not in FAMILIES:
            raise ValueError(f"prior must be one of {FAMILIES}, got {prior!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        posterior = posterior or prior
        if posterior not in FAMILIES:
            raise ValueError(f"posterior must be one of {FAMILIES}, got {posterior!r}")
        if posterior_cov not in ("diag", "full"):
            raise ValueError(f"posterior_cov must be 'diag' or 'full', got {posterior_cov!r}")
        if posterior_cov == "full" and (objective != "elbo" or posterior != "gaussian"):
            raise ValueError("a full-covariance posterior needs objective='elbo' and posterior='gaussian'")
        if objective == "elbo" and posterior != prior and (posterior, prior) != ("gaussian", "laplace"):
            raise ValueError(
                f"the analytic-KL ELBO has no {posterior} posterior under a {prior} prior "
                "(use the prior's family, or a Gaussian posterior under a Laplace prior)"
            )
        self.data_dim, self.latent_dim, self.aux_dim = data_dim, latent_dim, aux_dim
        self.prior_family, self.posterior_family = prior, posterior
        self.prior_mean = prior_mean
        self.objective = objective
        self.weights = tuple(float(w) for w in weights)
        self.beta = beta
        self.dataset_size = 1  # set by fit(): the N of the minibatch-weighted estimator
        self.encoder_uses_u = encoder_uses_u
        enc_in = data_dim + (aux_dim if encoder_uses_u else 0)
        self.encoder_loc = MLP(enc_in, latent_dim, hidden_dim, n_layers, slope, activation)
        self.encoder_log_var = MLP(enc_in, latent_dim, hidden_dim, n_layers, slope, activation)
        self.posterior_cov = posterior_cov
        if posterior_cov == "full":
            add_cholesky_head(self, enc_in, latent_dim, hidden_dim, n_layers, slope, activation)
        # prior_layers=1 with a one-hot u: λ(u) is a per-segment lookup table (plus a shared bias)
        self.prior_layers = n_layers if prior_layers is None else prior_layers
        self.prior_net = MLP(aux_dim, 2 * latent_dim if prior_mean else latent_dim, hidden_dim, self.prior_layers, slope)
        self.decoder = MLP(latent_dim, data_dim, hidden_dim, n_layers, slope, activation)
        add_decoder_log_var(self, data_dim, decoder_var, learn_decoder_var)

    def config(self) -> dict:
        return {
            "data_dim": self.data_dim, "latent_dim": self.latent_dim, "aux_dim": self.aux_dim,
            "prior": self.prior_family, "posterior": self.posterior_family,
            "prior_mean": self.prior_mean, "encoder_uses_u": self.encoder_uses_u, "posterior_cov": self.posterior_cov,
            "prior_layers": self.prior_layers, "objective": self.objective, "weights": list(self.weights),
        }

    def _posterior(self, x: torch.Tensor, u: torch.Tensor):
        """(location, log of the Cholesky diagonal, Cholesky factor [B, d, d] or None if diagonal)."""
        xu = torch.cat([x, u], dim=1) if self.encoder_uses_u else x
        loc, log_diag = self.encoder_loc(xu), 0.5 * self.encoder_log_var(xu)
        if self.posterior_cov == "diag":
            return loc, log_diag, None
        return loc, log_diag, scale_tril(log_diag, self.encoder_tril(xu), self._tril_index)

    def encode(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and marginal log-scale of q(z|x,u), each [B, latent_dim]; the location is the estimate."""
        loc, log_diag, chol = self._posterior(x, u)
        if chol is None:
            return loc, log_diag
        return loc, 0.5 * torch.log((chol * chol).sum(-1))

    def prior_params(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and log-scale of p(z|u), each [B, latent_dim]."""
        out = self.prior_net(u)
        if self.prior_mean:
            loc, log_var = out.chunk(2, dim=1)
        else:
            loc, log_var = torch.zeros_like(out), out
        return loc, 0.5 * log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z), [B, data_dim]."""
        return self.decoder(z)

    @torch.no_grad()
    def sample(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, z) with z ~ p(z|u) and x ~ p(x|z), one draw per row of u."""
        loc, log_scale = self.prior_params(u)
        z = rsample(loc, log_scale, self.prior_family)
        mean = self.decode(z)
        return mean + torch.exp(0.5 * self.decoder_log_var) * torch.randn_like(mean), z

    def forward(self, batch: dict) -> dict:
        """The loss(batch) dict: what DistributedDataParallel calls."""
        return self.loss(batch)

    def loss(self, batch: dict) -> dict:
        x, u = batch["x"], batch["u"]
        q_loc, log_diag, chol = self._posterior(x, u)
        p_loc, p_log_scale = self.prior_params(u)
        if chol is None:
            q_log_scale, kl_extra = log_diag, None
            z = rsample(q_loc, q_log_scale, self.posterior_family)
        else:
            z, q_log_scale, kl_extra = correlated_gaussian_terms(q_loc, log_diag, chol)
        log_px_z = gaussian_decoder_log_lik(x, self.decode(z), self.decoder_log_var)
        if self.objective == "elbo":
            return elbo_objective(
                log_px_z, q_loc, q_log_scale, p_loc, p_log_scale, self.prior_family, self.beta, kl_extra,
                q_family=self.posterior_family,
            )
        log_pz = log_density(z, p_loc, p_log_scale, self.prior_family).sum(-1)
        return weighted_objective(
            log_px_z, z, q_loc, q_log_scale, self.posterior_family, log_pz, self.dataset_size, self.weights
        )
