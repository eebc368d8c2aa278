"""Input-convex neural network ψ (DESIGN.md op 2) as an nn.Module over ivae_ext.ops.icnn_map."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ivae_ext.ops import icnn_map


def _inverse_softplus(y: float) -> float:
    """The raw value r with softplus(r) = y > 0 (stable for small and large y)."""
    return y + math.log(-math.expm1(-y))


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ICNN: {name} must be an int >= 1, got {value!r}")
    return value


def flatten_points(x, dim: int, owner: str, name: str = "x") -> torch.Tensor:
    """x [..., dim] as [-1, dim], or a clear error naming the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(f"{owner}: {name} must have shape [..., {dim}] (last dimension = dim), got {list(x.shape)}")
    return x.reshape(-1, dim)


class ICNN(torch.nn.Module):
    """ψ(x) = wᵀ z_{K-1} + ½ α ‖x‖², z_k = softplus(a_k), a_0 = A_0 x + b_0,
    a_k = W_k z_{k-1} + A_k x + b_k: convex in x because W, w >= 0.

    Args:
        dim: d, the input dimension.
        hidden: H, units per layer.
        layers: K >= 1 (K = 1 has no hidden-to-hidden weights).
        strong_convexity: α >= 0; with α > 0, ψ is α-strongly convex and ∇ψ a bijection.
        learn_strong_convexity: learn α = softplus(raw) (then α must start > 0) instead of
            keeping it a fixed buffer.
        dtype, device: of the parameters, as for torch.nn layers.

    W = softplus(raw_W) and w = softplus(raw_w) are non-negative for any raw values, so
    training keeps ψ convex with no projection or clipping.
    """

    def __init__(self, dim: int, hidden: int, layers: int, strong_convexity: float = 0.0,
                 learn_strong_convexity: bool = False, dtype=None, device=None):
        super().__init__()
        self.dim = _check_positive_int("dim", dim)
        self.hidden = _check_positive_int("hidden", hidden)
        self.layers = _check_positive_int("layers", layers)
        if isinstance(strong_convexity, bool) or not isinstance(strong_convexity, (int, float)) or not strong_convexity >= 0:
            raise ValueError(f"ICNN: strong_convexity must be a float >= 0, got {strong_convexity!r}")
        if learn_strong_convexity and strong_convexity <= 0:
            raise ValueError("ICNN: learn_strong_convexity=True needs strong_convexity > 0 to start from "
                             f"(α = softplus(raw) is positive), got {strong_convexity!r}")
        factory = {"dtype": dtype, "device": device}
        K, H, d = layers, hidden, dim
        self.A = torch.nn.Parameter(torch.empty(K, H, d, **factory))
        self.b = torch.nn.Parameter(torch.empty(K, H, **factory))
        self.raw_W = torch.nn.Parameter(torch.empty(K - 1, H, H, **factory))
        self.raw_w = torch.nn.Parameter(torch.empty(H, **factory))
        self.learn_strong_convexity = bool(learn_strong_convexity)
        if self.learn_strong_convexity:
            self.raw_alpha = torch.nn.Parameter(torch.tensor(_inverse_softplus(float(strong_convexity)), **factory))
        else:
            self.register_buffer("alpha", torch.tensor(float(strong_convexity), **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.dim)  # nn.Linear's default for the free input weights
        with torch.no_grad():
            self.A.uniform_(-bound, bound)
            self.b.uniform_(-bound, bound)
            # softplus(raw) ≈ 1/H (jittered ×e^{±0.1}): W_k z and wᵀz average the H units instead
            # of summing them, so pre-activations, ψ and ∇ψ stay O(1) at any width and depth.
            center = _inverse_softplus(1.0 / self.hidden)
            self.raw_W.normal_(center, 0.1)
            self.raw_w.normal_(center, 0.1)

    def strong_convexity(self) -> torch.Tensor:
        """α as a 0-d tensor (differentiable when learned)."""
        return F.softplus(self.raw_alpha) if self.learn_strong_convexity else self.alpha

    def weights(self):
        """The icnn_map arguments (A, b, W, w, alpha) after reparametrisation: W, w >= 0, α >= 0."""
        return self.A, self.b, F.softplus(self.raw_W), F.softplus(self.raw_w), self.strong_convexity()

    def potential_and_gradient(self, x: torch.Tensor):
        """(ψ(x) [...], ∇ψ(x) [..., d]) for x [..., d], through the fused op."""
        flat = flatten_points(x, self.dim, type(self).__name__)
        psi, grad = icnn_map(flat, *self.weights())
        return psi.reshape(x.shape[:-1]), grad.reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ψ(x) [...] for x [..., d]."""
        return self.potential_and_gradient(x)[0]

    def extra_repr(self) -> str:
        alpha = "learned" if self.learn_strong_convexity else f"{self.alpha.item():g}"
        return f"dim={self.dim}, hidden={self.hidden}, layers={self.layers}, strong_convexity={alpha}"
