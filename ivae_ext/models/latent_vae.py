"""A VAE for data such as images, with a pluggable decoder: the common body of LIDVAE and its
MLP-decoder baselines (same encoder, likelihood, prior and objective, so that only the decoder
differs between the models a collapse comparison puts side by side).

- encoder: Gaussian q(z|x) from an MLP trunk with a (loc, log-variance) head (with a mixture
  prior, q(z|x, y) on [x, onehot(y)] and a categorical q(y|x));
- likelihood: Bernoulli on logits (binary data) or Gaussian (fixed or learned variance);
- prior: N(0, I), or a learned K-component Gaussian mixture (GMVAE form).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ivae_ext.models.nets import MLP, add_decoder_log_var, gaussian_decoder_log_lik, rsample
from ivae_ext.ops import expfam_kl
from ivae_ext.reference import component_log_density

LIKELIHOODS = ("bernoulli", "gaussian")
PRIORS = ("gaussian", "gmm")


def bernoulli_log_lik(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over the data dimensions, [B] (stable in the logits)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def _check_choice(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {choices}, got {value!r}")


def check_sizes(owner: str, **sizes) -> None:
    """Every named size is an int >= 1 (before any submodule is built, so the error names it)."""
    for name, value in sizes.items():
        _check_int(owner, name, value)


def _check_int(owner: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return value


class LatentVAE(nn.Module):
    """Negative ELBO of p(z) p(x | z) with p(x | z) from ``decoder`` (z [B, d] -> logits or mean [B, D]).

    Args:
        data_dim, latent_dim: D and d.
        decoder: the module mapping z to the likelihood's parameter (logits, or the Gaussian mean).
        likelihood: "bernoulli" (x must be 0/1) or "gaussian".
        decoder_var, learn_decoder_var: the Gaussian likelihood's (initial) variance per dimension.
        prior: "gaussian" (N(0, I)) or "gmm" (y ~ Cat(1/K), z | y ~ N(μ_y, diag σ_y²) learned).
        components: K of the mixture prior.
        encoder_hidden, encoder_layers: the encoder MLP (ReLU; layers = linear maps).
        beta: weight of the KL term (β-VAE when ≠ 1).
    """

    def __init__(self, data_dim: int, latent_dim: int, decoder: nn.Module, *, likelihood: str = "bernoulli",
                 decoder_var: float = 0.1, learn_decoder_var: bool = False, prior: str = "gaussian",
                 components: int = 10, encoder_hidden: int = 512, encoder_layers: int = 3, beta: float = 1.0):
        super().__init__()
        owner = type(self).__name__
        check_sizes(owner, data_dim=data_dim, latent_dim=latent_dim, encoder_hidden=encoder_hidden)
        self.data_dim, self.latent_dim = data_dim, latent_dim
        if likelihood == "gaussian" and not (isinstance(decoder_var, (int, float)) and decoder_var > 0):
            raise ValueError(f"{owner}: decoder_var must be a number > 0, got {decoder_var!r}")
        _check_choice(owner, "likelihood", likelihood, LIKELIHOODS)
        _check_choice(owner, "prior", prior, PRIORS)
        _check_int(owner, "components", components)
        _check_int(owner, "encoder_layers", encoder_layers, 2)
        if not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and beta >= 0):
            raise ValueError(f"{owner}: beta must be a number >= 0, got {beta!r}")
        self.likelihood, self.prior, self.beta = likelihood, prior, float(beta)
        self.components = components if prior == "gmm" else 1
        self.encoder_hidden, self.encoder_layers = encoder_hidden, encoder_layers
        enc_in = data_dim + (self.components if prior == "gmm" else 0)
        self.encoder = MLP(enc_in, 2 * latent_dim, encoder_hidden, encoder_layers, activation="relu")
        if prior == "gmm":
            self.encoder_y = MLP(data_dim, self.components, encoder_hidden, encoder_layers, activation="relu")
            # spread the components at the start, or they stay on top of each other
            self.prior_loc = nn.Parameter(torch.randn(self.components, latent_dim))
            self.prior_log_scale = nn.Parameter(torch.zeros(self.components, latent_dim))
        self.decoder = decoder
        if likelihood == "gaussian":
            add_decoder_log_var(self, data_dim, decoder_var, learn_decoder_var)
        self.learn_decoder_var = bool(learn_decoder_var) and likelihood == "gaussian"
        self.register_buffer("_zero", torch.zeros(()))

    # -- pieces -----------------------------------------------------------------------------
    def config(self) -> dict:
        return {"data_dim": self.data_dim, "latent_dim": self.latent_dim, "likelihood": self.likelihood,
                "prior": self.prior, "components": self.components, "beta": self.beta,
                "encoder_hidden": self.encoder_hidden, "encoder_layers": self.encoder_layers}

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.data_dim:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: x must have shape [B, {self.data_dim}], got {shape}")

    def _gaussian_posterior(self, h: torch.Tensor):
        loc, log_var = self.encoder(h).chunk(2, dim=-1)
        return loc, 0.5 * log_var

    def _mixture_posteriors(self, x: torch.Tensor):
        """log q(y|x) [B, K] and the per-component q(z|x, y) loc, log σ [B, K, d]."""
        B, K = x.shape[0], self.components
        log_qy = F.log_softmax(self.encoder_y(x), dim=-1)
        onehot = torch.eye(K, dtype=x.dtype, device=x.device).expand(B, K, K)
        h = torch.cat([x.unsqueeze(1).expand(B, K, x.shape[1]), onehot], dim=-1)
        loc, log_scale = self._gaussian_posterior(h)
        return log_qy, loc, log_scale

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and log-scale [B, d] of q(z|x). With the mixture prior, q(z|x) = Σ_y q(y|x) q(z|x,y)
        is summarised by its moment-matched Gaussian (same mean and per-dimension variance)."""
        self._check_x(x)
        if self.prior == "gaussian":
            return self._gaussian_posterior(x)
        log_qy, loc, log_scale = self._mixture_posteriors(x)
        w = log_qy.exp().unsqueeze(-1)
        mean = (w * loc).sum(1)
        var = (w * (torch.exp(2 * log_scale) + loc * loc)).sum(1) - mean * mean
        return mean, 0.5 * torch.log(var.clamp_min(torch.finfo(var.dtype).tiny))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameter [B, D]: logits (Bernoulli) or mean (Gaussian)."""
        return self.decoder(z)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] [B, D] (sigmoid of the logits for Bernoulli)."""
        out = self.decode(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) [B], summed over the data dimensions."""
        out = self.decode(z)
        if self.likelihood == "bernoulli":
            return bernoulli_log_lik(x, out)
        return gaussian_decoder_log_lik(x, out, self.decoder_log_var)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) [...] for z [..., d]."""
        if self.prior == "gaussian":
            return component_log_density(z, self._zero, self._zero).sum(-1)
        per_component = component_log_density(z.unsqueeze(-2), self.prior_loc, self.prior_log_scale).sum(-1)
        return torch.logsumexp(per_component, dim=-1) - math.log(self.components)

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[x | z], z) for n draws z ~ p(z) (the mean, not a noisy draw: what one plots)."""
        _check_int(type(self).__name__, "n", n)
        dtype, device = self._zero.dtype, self._zero.device
        if self.prior == "gaussian":
            z = torch.randn(n, self.latent_dim, dtype=dtype, device=device)
        else:
            y = torch.randint(self.components, (n,), device=device)
            z = self.prior_loc[y] + torch.exp(self.prior_log_scale[y]) * torch.randn(n, self.latent_dim, dtype=dtype,
                                                                                     device=device)
        return self.mean(z), z

    # -- objective --------------------------------------------------------------------------
    def loss(self, batch: dict) -> dict:
        """{"loss": −ELBO with the KL weighted by β, "recon": −E_q log p(x|z), "kl": KL terms}, batch means."""
        x = batch["x"]
        self._check_x(x)
        if self.prior == "gaussian":
            q_loc, q_log_scale = self._gaussian_posterior(x)
            z = rsample(q_loc, q_log_scale, "gaussian")
            recon = -self.log_likelihood(x, z).mean()
            kl = expfam_kl(q_loc, q_log_scale, self._zero, self._zero, family="gaussian", reduction="sum").mean()
            return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl}
        # GMVAE: Σ_y q(y|x) [−log p(x|z_y) + KL(q(z|x,y) ‖ p(z|y))] + KL(q(y|x) ‖ Cat(1/K)), one z_y per y
        B, K, d = x.shape[0], self.components, self.latent_dim
        log_qy, loc, log_scale = self._mixture_posteriors(x)
        qy = log_qy.exp()
        z = rsample(loc, log_scale, "gaussian")
        log_px = self.log_likelihood(x.unsqueeze(1).expand(B, K, x.shape[1]).reshape(B * K, -1),
                                     z.reshape(B * K, d)).reshape(B, K)
        kl_z = expfam_kl(loc.reshape(B * K, d), log_scale.reshape(B * K, d),
                         self.prior_loc.expand(B, K, d).reshape(B * K, d),
                         self.prior_log_scale.expand(B, K, d).reshape(B * K, d),
                         family="gaussian", reduction="sum").reshape(B, K)
        kl_y = (qy * (log_qy + math.log(K))).sum(-1)
        recon = -(qy * log_px).sum(-1).mean()
        kl = ((qy * kl_z).sum(-1) + kl_y).mean()
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl, "kl_y": kl_y.mean()}

    def forward(self, batch: dict) -> dict:
        """The loss dict (so DistributedDataParallel can wrap the model)."""
        return self.loss(batch)


class MLPVAE(LatentVAE):
    """The baseline: LatentVAE with an MLP decoder (ReLU, ``decoder_layers`` linear maps of width
    ``decoder_hidden``); with beta ≠ 1, the β-VAE. Other arguments as LatentVAE."""

    def __init__(self, data_dim: int, latent_dim: int, *, decoder_hidden: int = 512, decoder_layers: int = 3,
                 **kwargs):
        check_sizes(type(self).__name__, data_dim=data_dim, latent_dim=latent_dim, decoder_hidden=decoder_hidden,
                    decoder_layers=decoder_layers)
        decoder = MLP(latent_dim, data_dim, decoder_hidden, decoder_layers, activation="relu")
        super().__init__(data_dim, latent_dim, decoder, **kwargs)
        self.decoder_hidden, self.decoder_layers = decoder_hidden, decoder_layers

    def config(self) -> dict:
        return {**super().config(), "decoder": "mlp", "decoder_hidden": self.decoder_hidden,
                "decoder_layers": self.decoder_layers}
