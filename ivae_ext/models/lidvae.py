r"""LIDVAE (Wang, Blei & Cunningham 2021): a VAE whose decoder is injective by construction,

    decoder(z) = ∇ψ₂( β( ∇ψ₁(z) ) ),

ψ₁ an ICNN on R^d, β: R^d → R^D an injective lift, ψ₂ an ICNN on R^D, so the latent is identifiable
and (their claim) no latent collapses. The ∇ψ are :class:`ivae_ext.nn.BrenierMap` (fused
``icnn_map`` forward and backward).

Why both guards, strong convexity α > 0 and an injective β: ∇ψ of a convex ψ is monotone but may
be flat along a direction (Jacobian ∇²ψ singular), and a rank-deficient β maps two latents to one
point; either lets the decoder ignore a latent direction, and a latent the decoder (nearly)
ignores is (nearly) non-identifiable, which is when its posterior collapses to the prior. With
∇²ψ ⪰ αI in both potentials and β's singular values ≥ s_min, the decoder Jacobian J satisfies
σ_min(J) ≥ α₁·s_min·α₂ everywhere: every latent moves the output. The official code enforces
neither (no α term; β a learned unconstrained Dense layer whose singular-value clip is dead code);
``anchor_recipe=True`` builds that variant for comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ivae_ext.models.latent_vae import LatentVAE, _check_choice, _check_int, check_sizes
from ivae_ext.nn import BrenierMap
from ivae_ext.nn.icnn import _inverse_softplus

LIFTS = ("identity", "learned", "linear")


def _orthonormal_columns(raw: torch.Tensor) -> torch.Tensor:
    """Q [n, k] with QᵀQ = I from raw [n, k] (n ≥ k): QR, signs fixed so Q is a smooth function of raw."""
    q, r = torch.linalg.qr(raw)
    sign = torch.sign(torch.diagonal(r))
    return q * torch.where(sign == 0, torch.ones_like(sign), sign)


class InjectiveLift(nn.Module):
    """β: R^d → R^D.

    kind:
        "identity": the fixed zero-padded identity v ↦ [v; 0] (needs D ≥ d; no parameters).
        "learned": v ↦ U diag(s) Vᵀ v + c with U [D, d] and V [d, d] orthonormal (QR of free
            matrices, random at the start), s = s_min + softplus(raw) ≥ s_min > 0: injective by
            construction, its singular values are exactly s (needs D ≥ d).
        "linear": an unconstrained nn.Linear(d, D) with bias, the official code's β (may lose rank).
    """

    def __init__(self, latent_dim: int, data_dim: int, kind: str = "identity", min_singular_value: float = 0.5):
        super().__init__()
        _check_choice("InjectiveLift", "kind", kind, LIFTS)
        if kind != "linear" and data_dim < latent_dim:
            raise ValueError(f"InjectiveLift: an injective map R^{latent_dim} → R^{data_dim} needs data_dim >= "
                             f"latent_dim, got data_dim={data_dim} < latent_dim={latent_dim}")
        self.kind, self.latent_dim, self.data_dim = kind, latent_dim, data_dim
        self.min_singular_value = float(min_singular_value)
        if kind == "identity":
            self.register_buffer("weight_fixed", torch.eye(data_dim, latent_dim))
        elif kind == "learned":
            if not self.min_singular_value > 0:
                raise ValueError(f"InjectiveLift: min_singular_value must be > 0, got {min_singular_value!r}")
            # random orthonormal U, V (QR of Gaussian matrices: Haar-distributed) and singular values
            # max(1, s_min + 0.5): each latent starts spread over all outputs, not tied to the first d
            # coordinates as the identity lift is (which cost likelihood on digits, docs/LIDVAE.md)
            self.raw_u = nn.Parameter(torch.randn(data_dim, latent_dim))
            self.raw_v = nn.Parameter(torch.randn(latent_dim, latent_dim))
            start = max(1.0, self.min_singular_value + 0.5) - self.min_singular_value
            self.raw_s = nn.Parameter(torch.full((latent_dim,), _inverse_softplus(start)))
            self.bias = nn.Parameter(torch.zeros(data_dim))
        else:
            self.linear = nn.Linear(latent_dim, data_dim)

    def singular_values(self) -> torch.Tensor:
        """β's singular values [min(d, D)], descending (for "learned": s, sorted)."""
        if self.kind == "learned":
            return torch.sort(self.min_singular_value + F.softplus(self.raw_s), descending=True).values
        return torch.linalg.svdvals(self.weight())

    def weight(self) -> torch.Tensor:
        """β's matrix [D, d]."""
        if self.kind == "identity":
            return self.weight_fixed
        if self.kind == "learned":
            s = self.min_singular_value + F.softplus(self.raw_s)
            return (_orthonormal_columns(self.raw_u) * s) @ _orthonormal_columns(self.raw_v).T
        return self.linear.weight

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.kind == "identity":
            return F.pad(v, (0, self.data_dim - self.latent_dim))
        if self.kind == "learned":
            return F.linear(v, self.weight(), self.bias)
        return self.linear(v)

    def extra_repr(self) -> str:
        extra = f", min_singular_value={self.min_singular_value:g}" if self.kind == "learned" else ""
        return f"{self.latent_dim} -> {self.data_dim}, kind={self.kind}{extra}"


class BrenierDecoder(nn.Module):
    """z ↦ ∇ψ₂(β(∇ψ₁(z))): ψ₁ an ICNN on R^d (width hidden_latent), ψ₂ on R^D (width hidden_data),
    both with ``layers`` layers and strong convexity α."""

    def __init__(self, latent_dim: int, data_dim: int, *, hidden_latent: int = 256, hidden_data: int = 256,
                 layers: int = 2, strong_convexity: float = 1.0, lift: str = "learned",
                 min_singular_value: float = 1.5, init_gain: float = 1.0):
        super().__init__()
        self.latent_map = BrenierMap(latent_dim, hidden_latent, layers, strong_convexity)
        self.lift = InjectiveLift(latent_dim, data_dim, lift, min_singular_value)
        self.data_map = BrenierMap(data_dim, hidden_data, layers, strong_convexity)
        with torch.no_grad():
            for m in (self.latent_map, self.data_map):
                m.potential.A.mul_(init_gain)
                m.potential.b.mul_(init_gain)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.data_map(self.lift(self.latent_map(z)))


class LIDVAE(LatentVAE):
    """LIDVAE: :class:`LatentVAE` with the injective :class:`BrenierDecoder`.

    Args (besides LatentVAE's likelihood, decoder_var, learn_decoder_var, prior, components,
    encoder_hidden, encoder_layers, beta):
        strong_convexity: α of ψ₁ and ψ₂ (default 1: ∇²ψ ⪰ I, so neither map contracts any
            direction and the decoder's smallest singular value is ≥ s_min (1 for the identity
            lift); on digits α = 1 gave a better IW-LL than 0.5 with every unit active,
            docs/LIDVAE.md). α = 0 drops the guarantee (ablations, the official recipe).
        lift: "learned" (default: injective by construction, singular values ≥
            min_singular_value, default 1.5), "identity" (the fixed zero-padded identity of the
            paper's text) or "linear" (unconstrained, the official code). On digits the learned
            lift reached a better validation ELBO than the identity (which ties latent j to output
            j) with every unit active; the selection and all numbers are in docs/LIDVAE.md.
        icnn_hidden_latent, icnn_hidden_data, icnn_layers: ψ₁ and ψ₂ widths and depth.
        init_gain: scale of the ICNNs' initial input weights A, b (default 12, the CLI's): the
            ICNN's own initialisation gives ψ so little curvature that the decoder barely learned
            in 300 epochs on digits (docs/LIDVAE.md).
        anchor_recipe: the official code's choices: lift="linear" and α = 0 (overrides both). Its
            ICNN activation (squared leaky ReLU, then leaky ReLU) is not reproduced: the fused op
            implements softplus ICNNs.
    """

    def __init__(self, data_dim: int, latent_dim: int, *, strong_convexity: float = 1.0, lift: str = "learned",
                 min_singular_value: float = 1.5, icnn_hidden_latent: int = 256, icnn_hidden_data: int = 256,
                 icnn_layers: int = 2, init_gain: float = 12.0, anchor_recipe: bool = False, **kwargs):
        owner = type(self).__name__
        check_sizes(owner, data_dim=data_dim, latent_dim=latent_dim, icnn_hidden_latent=icnn_hidden_latent,
                    icnn_hidden_data=icnn_hidden_data)
        if anchor_recipe:
            lift, strong_convexity = "linear", 0.0
        if isinstance(strong_convexity, bool) or not isinstance(strong_convexity, (int, float)) or not \
                strong_convexity >= 0:
            raise ValueError(f"{owner}: strong_convexity must be a number >= 0 (> 0 for the guarantee; 0 only "
                             f"for ablations and the official recipe), got {strong_convexity!r}")
        _check_choice(owner, "lift", lift, LIFTS)
        _check_int(owner, "icnn_layers", icnn_layers)
        decoder = BrenierDecoder(latent_dim, data_dim, hidden_latent=icnn_hidden_latent, hidden_data=icnn_hidden_data,
                                 layers=icnn_layers, strong_convexity=float(strong_convexity), lift=lift,
                                 min_singular_value=min_singular_value, init_gain=init_gain)
        super().__init__(data_dim, latent_dim, decoder, **kwargs)
        self.strong_convexity, self.lift_kind, self.anchor_recipe = float(strong_convexity), lift, bool(anchor_recipe)
        self.icnn = (icnn_hidden_latent, icnn_hidden_data, icnn_layers)

    def config(self) -> dict:
        return {**super().config(), "decoder": "brenier", "strong_convexity": self.strong_convexity,
                "lift": self.lift_kind, "min_singular_value": self.decoder.lift.min_singular_value,
                "icnn_hidden_latent": self.icnn[0], "icnn_hidden_data": self.icnn[1], "icnn_layers": self.icnn[2],
                "anchor_recipe": self.anchor_recipe}
