"""Fused ICNN potential and Brenier map: ψ(x) and ∇ψ(x) in one pass, analytic backward.

Kernels: ``torch.ops.ivae_ext.icnn_map`` / ``icnn_map_backward`` (csrc/); shapes for
torch.compile/export and autograd are registered here. Without the compiled op the reference
(autograd, double backpropagation) runs instead.
"""

from __future__ import annotations

from numbers import Real

import torch

from ivae_ext import reference
from ivae_ext._extension import HAS_EXTENSION
from ivae_ext.ops._autograd import records_graph, refuse_double_backward
from ivae_ext.ops._checks import require_tensors
from ivae_ext.ops._switch import reference_ops_enabled

_ARG_NAMES = ("x", "A", "b", "W", "w")
HAS_FUSED_ICNN = HAS_EXTENSION and hasattr(torch.ops.ivae_ext, "icnn_map")


def check_icnn_args(x, A, b, W, w, alpha, op: str = "icnn_map") -> None:
    """The op's argument contract, for fake tensors and the reference fallback (the C++ kernels
    check the same things, with the same messages, for real tensors)."""
    tensors = (x, A, b, W, w)
    for name, t in zip(_ARG_NAMES, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {t.dtype}")
    for name, t in zip(_ARG_NAMES[1:] + ("alpha",), tensors[1:] + (alpha,)):
        if t.dtype != x.dtype:
            raise TypeError(f"{op}: x and {name} must have the same dtype, got {x.dtype} and {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{op}: x and {name} must be on the same device, got {x.device} and {t.device}")
    if x.dim() != 2:
        raise ValueError(f"{op}: x must have shape [B, d], got {list(x.shape)}")
    if A.dim() != 3 or A.shape[0] < 1 or A.shape[1] < 1 or A.shape[2] != x.shape[1]:
        raise ValueError(f"{op}: A must have shape [K, H, d] with K, H >= 1 and d = {x.shape[1]}, got {list(A.shape)}")
    layers, hidden = A.shape[0], A.shape[1]
    expected = {"b": [layers, hidden], "W": [layers - 1, hidden, hidden], "w": [hidden]}
    for name, t in (("b", b), ("W", W), ("w", w)):
        if list(t.shape) != expected[name]:
            raise ValueError(f"{op}: {name} must have shape {expected[name]} (K={layers}, H={hidden}), got {list(t.shape)}")
    if alpha.dim() != 0:
        raise ValueError(f"{op}: alpha must be a float or a 0-d tensor, got shape {list(alpha.shape)}")


def _check_alpha_value(value: float, op: str) -> None:
    """α must be a finite number >= 0 (NaN compares false both ways, so test what is wanted)."""
    if not value >= 0:
        raise ValueError(f"{op}: alpha must be >= 0 (strong convexity), got {value}")
    if value == float("inf"):
        raise ValueError(f"{op}: alpha must be finite (½ α ‖x‖² is not a potential for α = inf), got {value}")


def _alpha_tensor(alpha, x: torch.Tensor, op: str = "icnn_map") -> torch.Tensor:
    if isinstance(alpha, torch.Tensor):
        return alpha
    if isinstance(alpha, Real) and not isinstance(alpha, bool):
        _check_alpha_value(float(alpha), op)
        return torch.tensor(float(alpha), dtype=x.dtype, device=x.device)
    raise TypeError(f"{op}: alpha must be a float or a 0-d tensor, got {type(alpha).__name__}")


def _reference_icnn_map(x, A, b, W, w, alpha):
    """``reference.icnn_map`` with the fused op's autograd behaviour, for the wrappers' reference
    path: the reference builds its graph (double backpropagation) even under no_grad or when no
    input requires grad; that graph is dropped when the fused op would record none. Under
    inference mode (where autograd cannot run on the inputs) it computes on copies outside it and
    returns inference tensors, as the fused op does."""
    inputs = (x, A, b, W, w, alpha)
    if torch.is_inference_mode_enabled():
        with torch.inference_mode(False):
            psi, grad = reference.icnn_map(*(t.clone() for t in inputs))
        return psi.clone(), grad.clone()
    psi, grad = reference.icnn_map(*inputs)
    if not records_graph(*inputs):
        psi, grad = psi.detach(), grad.detach()
    return psi, grad


def icnn_map(x, A, b, W, w, alpha=0.0):
    """(ψ(x) [B], ∇ψ(x) [B, d]) of the ICNN with softplus activations (DESIGN.md op 2).

    Args:
        x: [B, d] points.
        A: [K, H, d] input weights (free); b: [K, H] biases.
        W: [K-1, H, H] hidden weights (entry k-1 is W_k; [0, H, H] when K = 1), w: [H] output
            weights. W and w must be >= 0 for ψ to be convex: the op computes whatever it is
            given; ivae_ext.nn.ICNN keeps them non-negative.
        alpha: strong convexity α >= 0, a float or a 0-d tensor (which can require grad).

    Differentiable once in every argument (the backward is analytic, no autograd graph);
    a second backward raises an error.

    Range: where an intermediate exceeds the dtype's range — a pre-activation a_k (e.g. x and A
    both ~1e30 in float32) or a reverse-sweep product W_kᵀ g_k — the results are unspecified and
    may be finite: the GEMMs accumulate with fused multiply-adds, which turn a sum of overflowing
    terms into ±inf (of either sign) rather than NaN. Use float64 for such magnitudes.

    Under ``ivae_ext.ops.use_reference_ops()`` (and without the compiled op) this is
    ``ivae_ext.reference.icnn_map`` after the same argument checks (autograd through double
    backpropagation; differentiable twice there).
    """
    require_tensors("icnn_map", _ARG_NAMES, (x, A, b, W, w))
    alpha = _alpha_tensor(alpha, x)
    if not HAS_FUSED_ICNN or reference_ops_enabled():
        check_icnn_args(x, A, b, W, w, alpha)
        _check_alpha_value(alpha.item(), "icnn_map")
        return _reference_icnn_map(x, A, b, W, w, alpha)
    psi, grad, _ = torch.ops.ivae_ext.icnn_map.default(x, A, b, W, w, alpha)
    return psi, grad


if HAS_FUSED_ICNN:

    @torch.library.register_fake("ivae_ext::icnn_map")
    def _icnn_map_fake(x, A, b, W, w, alpha):
        check_icnn_args(x, A, b, W, w, alpha)
        layers, hidden = A.shape[0], A.shape[1]
        return x.new_empty(x.shape[:1]), x.new_empty(x.shape), x.new_empty((2, layers, x.shape[0], hidden))

    @torch.library.register_fake("ivae_ext::icnn_map_backward")
    def _icnn_map_backward_fake(grad_psi, grad_grad, x, A, b, W, w, alpha, saved, output_mask):
        check_icnn_args(x, A, b, W, w, alpha)
        inputs = (x, A, b, W, w, alpha)
        return tuple(t.new_empty(t.shape if wanted else (0,)) for t, wanted in zip(inputs, output_mask))

    # icnn_map's autograd is registered in C++ (csrc/ops/icnn_map_autograd.cpp).
    refuse_double_backward("ivae_ext::icnn_map_backward", "icnn_map", "ivae_ext.reference.icnn_map")
