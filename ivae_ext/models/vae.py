"""β-VAE baseline: the iVAE's networks without u, with a standard normal prior."""

from __future__ import annotations


import torch
from torch import nn

from ivae_ext.models.nets import (
    MLP,
    add_cholesky_head,
    add_decoder_log_var,
    correlated_gaussian_terms,
    gaussian_decoder_log_lik,
    rsample,
    scale_tril,
)
from ivae_ext.models.objectives import elbo_objective


class VAE(nn.Module):
    """Negative ELBO −E_q log p(x|z) + β KL(q(z|x) ‖ N(0, I)), KL through ``ivae_ext.ops.expfam_kl``."""

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden_dim: int = 50,
        n_layers: int = 3,
        decoder_var: float = 0.1,
        learn_decoder_var: bool = False,
        beta: float = 1.0,
        slope: float = 0.1,
        activation: str = "lrelu",
        posterior_cov: str = "diag",
    ):
        super().__init__()
        if posterior_cov not in ("diag", "full"):
            raise ValueError(f"posterior_cov must be 'diag' or 'full', got {posterior_cov!r}")
        self.posterior_cov = posterior_cov
        self.data_dim, self.latent_dim, self.beta = data_dim, latent_dim, beta
        self.dataset_size = 1
        self.encoder_loc = MLP(data_dim, latent_dim, hidden_dim, n_layers, slope, activation)
        self.encoder_log_var = MLP(data_dim, latent_dim, hidden_dim, n_layers, slope, activation)
        if posterior_cov == "full":
            add_cholesky_head(self, data_dim, latent_dim, hidden_dim, n_layers, slope, activation)
        self.decoder = MLP(latent_dim, data_dim, hidden_dim, n_layers, slope, activation)
        add_decoder_log_var(self, data_dim, decoder_var, learn_decoder_var)
        self.register_buffer("_zero", torch.zeros(()))

    def config(self) -> dict:
        return {"data_dim": self.data_dim, "latent_dim": self.latent_dim, "beta": self.beta,
                "posterior_cov": self.posterior_cov}

    def encode(self, x: torch.Tensor, u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and marginal log-scale of q(z|x); u is ignored (accepted for a common interface)."""
        loc, log_diag, chol = self._posterior(x)
        if chol is None:
            return loc, log_diag
        return loc, 0.5 * torch.log((chol * chol).sum(-1))

    def _posterior(self, x: torch.Tensor):
        loc, log_diag = self.encoder_loc(x), 0.5 * self.encoder_log_var(x)
        if self.posterior_cov == "diag":
            return loc, log_diag, None
        return loc, log_diag, scale_tril(log_diag, self.encoder_tril(x), self._tril_index)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, z) for n draws z ~ N(0, I), x ~ p(x|z)."""
        z = torch.randn(n, self.latent_dim, dtype=self._zero.dtype, device=self._zero.device)
        mean = self.decode(z)
        return mean + torch.exp(0.5 * self.decoder_log_var) * torch.randn_like(mean), z

    def forward(self, batch: dict) -> dict:
        """The loss(batch) dict: what DistributedDataParallel calls."""
        return self.loss(batch)

    def loss(self, batch: dict) -> dict:
        x = batch["x"]
        q_loc, log_diag, chol = self._posterior(x)
        if chol is None:
            q_log_scale, kl_extra = log_diag, None
            z = rsample(q_loc, q_log_scale, "gaussian")
        else:
            z, q_log_scale, kl_extra = correlated_gaussian_terms(q_loc, log_diag, chol)
        log_px_z = gaussian_decoder_log_lik(x, self.decode(z), self.decoder_log_var)
        zero = self._zero.expand(1, 1)
        return elbo_objective(log_px_z, q_loc, q_log_scale, zero, zero, "gaussian", self.beta, kl_extra)
