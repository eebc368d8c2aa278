r"""IMA-VAE (Reizinger et al. 2022, "Embrace the gap"): a VAE whose Gaussian decoder has a fixed,
small variance γ⁻², with a prior matched to the sources.

As γ⁻² → 0 the ELBO of such a VAE tends to the log-likelihood minus the decoder's IMA contrast,
so among the decoders that fit the data it prefers those with orthogonal Jacobian columns: it
recovers the sources of a conformal (e.g. Möbius) mixing. A class of its own rather than a
configuration of ``VAE`` because of the uniform prior: the posterior is a Gaussian in an
unconstrained y, pushed through a sigmoid into the cube (0, 1)^n where the prior is uniform,

    z = sigmoid(y), y ~ N(μ(x), σ(x)²),  log q(z|x) = log N(y; μ, σ²) − Σ_k log sigmoid'(y_k),

and its KL to U(0, 1)^n has no closed form: KL = −H(N(μ, σ²)) − E_q Σ_k log sigmoid'(y_k), the
entropy exact and the second term by the training sample (the anchor's Monte-Carlo estimator
would also sample the entropy). The log-Jacobian is computed in y (logsigmoid(y) +
logsigmoid(−y)), so a saturated float32 sigmoid cannot make it −inf (the anchor's code evaluates
log U(0,1) at z, which is −inf at exactly 0 or 1). Gaussian and Laplace priors: z = y, KL analytic
(the fused ``expfam_kl``; the Gaussian–Laplace formula in ``models.objectives``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ivae_ext.models.nets import MLP, gaussian_decoder_log_lik
from ivae_ext.models.objectives import gaussian_laplace_kl
from ivae_ext.noise import normal_like
from ivae_ext.ops import expfam_kl

PRIORS = ("uniform", "gaussian", "laplace")
_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


def log_sigmoid_derivative(y: torch.Tensor) -> torch.Tensor:
    """log sigmoid'(y) = log sigmoid(y) + log sigmoid(−y), finite for every finite y."""
    return F.logsigmoid(y) + F.logsigmoid(-y)


class IMAVAE(nn.Module):
    """Encoder MLP x → (μ, log σ²) and decoder MLP z → mean of x, both ``n_layers`` linear maps with
    ``activation`` between them (default leaky ReLU, slope 0.2, the anchor's; see
    ``models.nets.ACTIVATIONS``), width ``hidden_dim`` (default 10·latent_dim, the anchor's; the
    encoder's ``encoder_hidden_dim`` if given);
    a fixed Gaussian decoder variance ``decoder_var`` (the same for every dimension)."""

    def __init__(self, data_dim: int, latent_dim: int, decoder_var: float = 1e-4, prior: str = "uniform",
                 hidden_dim: int | None = None, n_layers: int = 2, slope: float = 0.2, activation: str = "lrelu",
                 encoder_hidden_dim: int | None = None):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        for name, value in (("data_dim", data_dim), ("latent_dim", latent_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if latent_dim > data_dim:
            raise ValueError(f"latent_dim ({latent_dim}) must not exceed data_dim ({data_dim}): the decoder "
                             "must be able to be injective")
        for name, value in (("hidden_dim", hidden_dim), ("encoder_hidden_dim", encoder_hidden_dim)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")
        hidden_dim = hidden_dim or 10 * latent_dim
        encoder_hidden_dim = encoder_hidden_dim or hidden_dim
        self.data_dim, self.latent_dim, self.prior, self.hidden_dim, self.encoder_hidden_dim, self.n_layers = (
            data_dim, latent_dim, prior, hidden_dim, encoder_hidden_dim, n_layers)
        self.activation = activation
        self.encoder = MLP(data_dim, 2 * latent_dim, encoder_hidden_dim, n_layers, slope, activation)
        self.decoder = MLP(latent_dim, data_dim, hidden_dim, n_layers, slope, activation)
        self.register_buffer("decoder_log_var", torch.zeros(()))
        self.set_decoder_var(decoder_var)

    def set_decoder_var(self, value: float) -> None:
        """The decoder variance γ⁻² (a buffer: saved with the model, not trained)."""
        if not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise ValueError(f"decoder_var must be a finite number > 0, got {value!r}")
        self.decoder_log_var.fill_(math.log(value))

    @property
    def decoder_var(self) -> float:
        return float(self.decoder_log_var.exp())

    def config(self) -> dict:
        return {"data_dim": self.data_dim, "latent_dim": self.latent_dim, "prior": self.prior,
                "hidden_dim": self.hidden_dim, "encoder_hidden_dim": self.encoder_hidden_dim, "n_layers": self.n_layers, "activation": self.activation,
                "decoder_var": self.decoder_var}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and log-scale of the Gaussian posterior over y (= z except under the uniform prior)."""
        out = self.encoder(x)
        return out[:, :self.latent_dim], 0.5 * out[:, self.latent_dim:]

    def to_latent(self, y: torch.Tensor) -> torch.Tensor:
        """z from y: sigmoid into (0, 1) under the uniform prior, else the identity."""
        return torch.sigmoid(y) if self.prior == "uniform" else y

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior's centre in z: to_latent(μ(x)) (the median of q(z|x); its mean for the
        Gaussian and Laplace priors). What MCC and the self-consistency are measured on."""
        return self.to_latent(self.encode(x)[0])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def kl_per_latent(self, loc: torch.Tensor, log_scale: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q(z_k|x) ‖ p(z_k)) per point and latent [B, n]: analytic, except the uniform prior's
        E_q log sigmoid'(y_k), estimated at the samples y (one draw per row here; average over
        several draws for a precise value)."""
        if self.prior == "gaussian":
            return expfam_kl(loc, log_scale, 0.0, 0.0, family="gaussian", reduction="none")
        if self.prior == "laplace":
            zero = torch.zeros((), dtype=loc.dtype, device=loc.device)
            return gaussian_laplace_kl(loc, log_scale, zero, zero)
        if y is None:
            raise ValueError("the uniform prior's KL needs the posterior samples y")
        return -_HALF_LOG_2PI_E - log_scale - log_sigmoid_derivative(y)

    def loss(self, batch: dict) -> dict:
        x = batch["x"]
        loc, log_scale = self.encode(x)
        y = loc + torch.exp(log_scale) * normal_like(loc)
        log_px_z = gaussian_decoder_log_lik(x, self.decode(self.to_latent(y)), self.decoder_log_var)
        recon = -log_px_z.mean()
        kl = self.kl_per_latent(loc, log_scale, y).sum(-1).mean()
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    forward = loss

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, z): n draws z from the prior and x ~ p(x|z)."""
        ref = self.decoder_log_var
        if self.prior == "uniform":
            z = torch.rand(n, self.latent_dim, dtype=ref.dtype, device=ref.device)
        elif self.prior == "gaussian":
            z = torch.randn(n, self.latent_dim, dtype=ref.dtype, device=ref.device)
        else:
            z = torch.distributions.Laplace(0.0, 1.0).sample((n, self.latent_dim)).to(ref)
        mean = self.decode(z)
        return mean + torch.exp(0.5 * ref) * torch.randn_like(mean), z
