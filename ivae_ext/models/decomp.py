r"""Decomposition VAE (Mathieu, Rainforth, Siddharth & Teh 2019): the α/β objective

    L_{α,β}(x) = E_q log p(x|z) − β KL(q(z|x) ‖ p(z)) − α D(q(z), p(z)),

β controlling the overlap of the encodings and α how closely the aggregate posterior q(z) matches
a structured prior (anisotropic, sparse, clustered). The model minimises the batch mean of −L.

D, one scalar per minibatch (``divergence``):

- ``"mmd"``: the unbiased MMD² between B prior draws and the batch's posterior samples, with the
  inverse-multiquadric kernel summed over ``mmd_scales``, per latent dimension (the sum of the 1-D
  MMD²s of the marginals, the anchor's); ``"mmd-joint"``: on the joint distance. Through the fused
  ``ivae_ext.ops.imq_mmd`` (no [B, B, d] tensor).
- ``"kl"``: the exclusive KL(q(z) ‖ p(z)) = E_{q(z)}[log q(z) − log p(z)] at the batch's posterior
  samples; ``"kl-inclusive"``: KL(p(z) ‖ q(z)) = E_{p(z)}[log p(z) − log q(z)] at B prior draws
  (the anchor's ``kld_inc``). log q(z) is the minibatch mixture (1/B) Σ_j q(z | x_j), streamed by
  ``ivae_ext.ops.aggregate_log_q``. Minibatch-weighted sampling (β-TCVAE) would subtract
  log N_data more — a constant, so the same gradients; the estimate of log q(z) is biased upwards
  by up to log(N_data / B) either way (see ``aggregate_log_q``'s docstring for the stratified
  alternative). Reported values of this term are therefore minibatch quantities.

The KL(q(z|x) ‖ p(z)) term is analytic for a Gaussian prior (``ivae_ext.distributions
.kl_divergence``, the fused op) and the Monte-Carlo estimate with the reconstruction's own
sample otherwise (``monte_carlo_kl``, joint log-densities — the anchor subtracted the mixture's
joint log p(z) once per dimension).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from ivae_ext.distributions import kl_divergence, monte_carlo_kl
from ivae_ext.noise import normal_like
from ivae_ext.ops import aggregate_log_q, imq_mmd

LIKELIHOODS = ("gaussian", "laplace", "bernoulli")
DIVERGENCES = ("mmd", "mmd-joint", "kl", "kl-inclusive")
MMD_SCALES = (0.2, 0.4, 1.0, 2.0, 4.0, 10.0)  # the anchor's C = 2 s, s ∈ {0.1, 0.2, 0.5, 1, 2, 5}
_MIN_SCALE = 1e-6  # added to the softplus scale heads (the anchor's)


def _is_gaussian(prior: Distribution) -> bool:
    return isinstance(prior, Independent) and type(prior.base_dist) is Normal


class DecompVAE(nn.Module):
    """VAE with a structured prior and the α/β objective.

    encoder: x [B, ...] → [B, 2·latent_dim] (location, and a raw scale: softplus + 1e-6).
    decoder: z [B, latent_dim] → the likelihood's location (logits for "bernoulli") shaped like x,
        or a pair (location, raw scale) when the decoder predicts its own scale (softplus + 1e-6).
    prior: a ``torch.distributions.Distribution`` with event_shape (latent_dim,) and a joint
        log_prob, or an ``nn.Module`` returning one (learned priors: ``AnisotropicPrior``,
        ``GaussianMixturePrior``); on the model's device.
    decoder_scale: the fixed scale of a Gaussian/Laplace likelihood whose decoder returns only a
        location (the anchor: Laplace 0.1 for images).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, prior, *,
                 likelihood: str = "gaussian", decoder_scale: float = 0.1, alpha: float = 0.0, beta: float = 1.0,
                 divergence: str = "mmd", mmd_scales=MMD_SCALES):
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"DecompVAE: latent_dim must be an int >= 1, got {latent_dim!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"DecompVAE: likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if divergence not in DIVERGENCES:
            raise ValueError(f"DecompVAE: divergence must be one of {DIVERGENCES}, got {divergence!r}")
        for name, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"DecompVAE: {name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(decoder_scale, (int, float)) and 0 < decoder_scale < math.inf):
            raise ValueError(f"DecompVAE: decoder_scale must be a finite number > 0, got {decoder_scale!r}")
        scales = tuple(float(c) for c in mmd_scales)
        if not scales or not all(0 < c < math.inf for c in scales):
            raise ValueError(f"DecompVAE: mmd_scales must be a non-empty sequence of finite numbers > 0, got "
                             f"{mmd_scales!r}")
        if isinstance(prior, nn.Module):
            self.prior_module, self._fixed_prior = prior, None
        elif isinstance(prior, Distribution):
            self.prior_module, self._fixed_prior = None, prior
        else:
            raise TypeError(f"DecompVAE: prior must be a torch Distribution or an nn.Module returning one, got "
                            f"{type(prior).__name__}")
        event = tuple(self.prior().event_shape)
        if event != (latent_dim,):
            raise ValueError(f"DecompVAE: the prior's event_shape must be ({latent_dim},) (latent_dim), got {event}")
        if divergence == "kl-inclusive" and not (self.prior().has_rsample or self.prior_module is None):
            raise ValueError("DecompVAE: divergence 'kl-inclusive' with a learned prior needs a prior with rsample")
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.likelihood, self.decoder_scale = latent_dim, likelihood, float(decoder_scale)
        self.alpha, self.beta, self.divergence, self.mmd_scales = float(alpha), float(beta), divergence, scales

    def prior(self) -> Distribution:
        """p(z) now (a learned prior is rebuilt from its current parameters)."""
        return self.prior_module() if self.prior_module is not None else self._fixed_prior

    def _prior_like(self, loc: torch.Tensor) -> Distribution:
        prior = self.prior()
        ref = prior.mean
        if ref.dtype != loc.dtype or ref.device != loc.device:
            raise ValueError(f"DecompVAE: the prior is {ref.dtype} on {ref.device} but the encoder gives {loc.dtype} "
                             f"on {loc.device}: build a fixed prior from tensors of that dtype and device, or pass a "
                             "prior module (it moves with the model)")
        return prior

    def config(self) -> dict:
        return {"latent_dim": self.latent_dim, "likelihood": self.likelihood, "decoder_scale": self.decoder_scale,
                "alpha": self.alpha, "beta": self.beta, "divergence": self.divergence,
                "mmd_scales": list(self.mmd_scales), "prior": repr(self.prior())}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z|x), each [B, latent_dim]."""
        out = self.encoder(x)
        if out.dim() != 2 or out.shape[1] != 2 * self.latent_dim:
            raise ValueError(f"DecompVAE: the encoder must return [B, {2 * self.latent_dim}] (location and raw "
                             f"scale), got {list(out.shape)}")
        return out[:, :self.latent_dim], F.softplus(out[:, self.latent_dim:]) + _MIN_SCALE

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(location or logits, scale or None) of p(x|z)."""
        out = self.decoder(z)
        if isinstance(out, tuple):
            loc, raw = out
            return loc, F.softplus(raw) + _MIN_SCALE
        return out, None

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z]: the location, or sigmoid of the logits."""
        loc, _ = self.decode(z)
        return torch.sigmoid(loc) if self.likelihood == "bernoulli" else loc

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over the data dimensions: [B]."""
        loc, scale = self.decode(z)
        if loc.shape != x.shape:
            raise ValueError(f"DecompVAE: the decoder returned shape {list(loc.shape)} for data {list(x.shape)}")
        if self.likelihood == "bernoulli":
            lp = -F.binary_cross_entropy_with_logits(loc, x, reduction="none")
        else:
            scale = scale if scale is not None else torch.full_like(loc, self.decoder_scale)
            dist = Normal(loc, scale) if self.likelihood == "gaussian" else torch.distributions.Laplace(loc, scale)
            lp = dist.log_prob(x)
        return lp.reshape(len(x), -1).sum(1)

    def kl_to_prior(self, loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ p(z)) per point [B]: analytic for a Gaussian prior, else Monte Carlo at z."""
        prior = self._prior_like(loc)
        if _is_gaussian(prior):
            return kl_divergence(Independent(Normal(loc, scale), 1), prior)
        return monte_carlo_kl(loc, scale, prior, samples=z.unsqueeze(0))

    def _prior_draws(self, n: int, like: torch.Tensor) -> torch.Tensor:
        prior = self._prior_like(like)
        return prior.rsample((n,)) if prior.has_rsample else prior.sample((n,))

    def aggregate_divergence(self, loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """D(q(z), p(z)) for the batch: a scalar (see the module docstring)."""
        if self.divergence in ("mmd", "mmd-joint"):
            return imq_mmd(self._prior_draws(len(z), z), z, self.mmd_scales,
                           per_dim=self.divergence == "mmd")
        log_scale = scale.log()
        if self.divergence == "kl":
            log_qz, _ = aggregate_log_q(z, loc, log_scale, with_marginals=False)
            return (log_qz - self._prior_like(z).log_prob(z)).mean()
        zp = self._prior_draws(len(z), z)
        log_qz, _ = aggregate_log_q(zp, loc, log_scale, with_marginals=False)
        return (self._prior_like(z).log_prob(zp) - log_qz).mean()

    def loss(self, batch: dict) -> dict:
        x = batch["x"]
        if len(x) < 2:
            raise ValueError(f"DecompVAE: a batch needs at least 2 points (q(z) is estimated from it), got {len(x)}")
        loc, scale = self.encode(x)
        z = loc + scale * normal_like(loc)
        recon = -self.log_likelihood(x, z).mean()
        kl = self.kl_to_prior(loc, scale, z).mean()
        loss = recon + self.beta * kl
        out = {"recon": recon, "kl": kl}
        if self.alpha > 0:
            reg = self.aggregate_divergence(loc, scale, z)
            loss = loss + self.alpha * reg
            out["reg"] = reg
        out["loss"] = loss
        return out

    def forward(self, batch: dict) -> dict:
        return self.loss(batch)

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[x|z], z) for n prior draws."""
        z = self.prior().sample((n,))
        return self.mean(z), z


class MLPEncoder(nn.Sequential):
    """Flatten, then ``layers`` hidden layers of ``hidden`` ReLU units, then [B, 2·latent_dim]."""

    def __init__(self, in_dim: int, latent_dim: int, hidden: int = 100, layers: int = 1):
        mods: list[nn.Module] = [nn.Flatten()]
        width = in_dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        mods.append(nn.Linear(width, 2 * latent_dim))
        super().__init__(*mods)


class MLPDecoder(nn.Module):
    """z → ``layers`` hidden ReLU layers → a location shaped ``out_shape`` (and, with
    ``learn_scale``, a raw per-output scale: the anchor's pinwheel decoder)."""

    def __init__(self, latent_dim: int, out_shape, hidden: int = 100, layers: int = 1, learn_scale: bool = False):
        super().__init__()
        self.out_shape = tuple(out_shape)
        out_dim = math.prod(self.out_shape)
        mods: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.trunk = nn.Sequential(*mods)
        self.loc = nn.Linear(width, out_dim)
        self.raw_scale = nn.Linear(width, out_dim) if learn_scale else None

    def forward(self, z: torch.Tensor):
        h = self.trunk(z)
        loc = self.loc(h).reshape(len(z), *self.out_shape)
        if self.raw_scale is None:
            return loc
        return loc, self.raw_scale(h).reshape(len(z), *self.out_shape)


__all__ = ["DecompVAE", "MLPEncoder", "MLPDecoder", "LIKELIHOODS", "DIVERGENCES", "MMD_SCALES"]
