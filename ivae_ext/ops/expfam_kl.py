"""Batched exponential-family KL(q || p): public wrapper, fake kernels and autograd.

The kernels are ``torch.ops.ivae_ext.expfam_kl`` / ``expfam_kl_backward`` (csrc/), with autograd
registered in C++; this file gives torch their shapes (fake kernels, for torch.compile/export),
refuses double backward, and falls back to ``ivae_ext.reference.expfam_kl`` when the extension is
not compiled.
"""

from __future__ import annotations

from numbers import Real

import torch

from ivae_ext import reference
from ivae_ext._extension import HAS_EXTENSION
from ivae_ext.ops._autograd import refuse_double_backward
from ivae_ext.ops._checks import require_tensors
from ivae_ext.ops._switch import reference_ops_enabled

FAMILIES = reference.FAMILIES
REDUCTIONS = reference.REDUCTIONS
_ARG_NAMES = ("q_loc", "q_log_scale", "p_loc", "p_log_scale")


def check_expfam_kl_args(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction) -> None:
    """The op's argument contract, for fake tensors and the reference fallback.

    Mirrors csrc/common/expfam_kl_args.h, which checks the same things for real tensors.
    """
    if family not in FAMILIES:
        raise ValueError(f"expfam_kl: family must be one of {FAMILIES}, got {family!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"expfam_kl: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    tensors = (q_loc, q_log_scale, p_loc, p_log_scale)
    for name, t in zip(_ARG_NAMES, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"expfam_kl: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"expfam_kl: {name} must be a floating-point tensor, got dtype {t.dtype}")
    for name, t in zip(_ARG_NAMES[1:], tensors[1:]):
        if t.dtype != q_loc.dtype:
            raise TypeError(
                f"expfam_kl: q_loc and {name} must have the same dtype, got {q_loc.dtype} and {t.dtype}"
            )
        if t.device != q_loc.device:
            raise ValueError(
                f"expfam_kl: q_loc and {name} must be on the same device, got {q_loc.device} and {t.device}"
            )
    if q_loc.dim() != 2:
        raise ValueError(f"expfam_kl: q_loc must have shape [B, d], got {list(q_loc.shape)}")
    if q_log_scale.shape != q_loc.shape:
        raise ValueError(
            f"expfam_kl: q_log_scale must have q_loc's shape {list(q_loc.shape)}, got {list(q_log_scale.shape)}"
        )
    batch, dim = q_loc.shape
    for name, t in zip(_ARG_NAMES[2:], tensors[2:]):
        shape = list(t.shape)
        aligned = [1] * (2 - len(shape)) + shape
        ok = len(shape) <= 2 and aligned[0] in (1, batch) and aligned[1] in (1, dim)
        if not ok:
            raise ValueError(
                f"expfam_kl: {name} must be broadcastable to q_loc's shape [B, d] = {[batch, dim]} "
                f"(a scalar, [d], [1, d], [B, 1] or [B, d]), got {shape}"
            )


def _check_options(q_loc, q_log_scale, family, reduction) -> None:
    """What the wrapper must see before it uses q_loc or hands strings to the dispatcher (whose
    own errors for a non-string are a pybind11 cast message)."""
    require_tensors("expfam_kl", _ARG_NAMES[:2], (q_loc, q_log_scale))
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(f"expfam_kl: family must be one of {FAMILIES}, got {family!r}")
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"expfam_kl: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _as_tensor(value, like: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    raise TypeError(f"expfam_kl: {name} must be a torch.Tensor or a real number, got {type(value).__name__}")


def expfam_kl(
    q_loc: torch.Tensor,
    q_log_scale: torch.Tensor,
    p_loc: torch.Tensor | float,
    p_log_scale: torch.Tensor | float,
    family: str = "gaussian",
    reduction: str = "sum",
) -> torch.Tensor:
    """KL(q || p) between factorized distributions of one family, in one fused pass.

    Args:
        q_loc, q_log_scale: [B, d] location and log-scale of q (log sigma for "gaussian",
            log b for "laplace", as in torch.distributions).
        p_loc, p_log_scale: p's parameters, [B, d] or broadcastable to it without copies:
            a scalar (tensor or Python number), [d], [1, d] or [B, 1]. Gradients come back in
            p's own shape.
        family: "gaussian" or "laplace".
        reduction: "sum" returns [B] (summed over d); "none" returns [B, d].

    All tensors share one dtype (float32/float64; float16/bfloat16 compute in float32) and one
    device. An empty batch gives an empty result. NaN in any input gives NaN in the affected
    entries (and rows, for "sum"); nothing is clamped.

    Under ``ivae_ext.ops.use_reference_ops()`` (and without the compiled extension) this is
    ``ivae_ext.reference.expfam_kl`` after the same argument checks (differentiable twice there;
    float16/bfloat16 then compute in their own dtype).
    """
    _check_options(q_loc, q_log_scale, family, reduction)
    p_loc = _as_tensor(p_loc, q_loc, "p_loc")
    p_log_scale = _as_tensor(p_log_scale, q_loc, "p_log_scale")
    if not HAS_EXTENSION or reference_ops_enabled():
        check_expfam_kl_args(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction)
        return reference.expfam_kl(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction)
    return torch.ops.ivae_ext.expfam_kl.default(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction)


if HAS_EXTENSION:

    @torch.library.register_fake("ivae_ext::expfam_kl")
    def _expfam_kl_fake(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction):
        check_expfam_kl_args(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction)
        shape = q_loc.shape[:1] if reduction == "sum" else q_loc.shape
        return q_loc.new_empty(shape)

    @torch.library.register_fake("ivae_ext::expfam_kl_backward")
    def _expfam_kl_backward_fake(grad, q_loc, q_log_scale, p_loc, p_log_scale, family, reduction, output_mask):
        check_expfam_kl_args(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction)
        inputs = (q_loc, q_log_scale, p_loc, p_log_scale)
        # Outputs nobody asked for are empty, as the kernels return them.
        return tuple(t.new_empty(t.shape if wanted else (0,)) for t, wanted in zip(inputs, output_mask))

    # expfam_kl's autograd is registered in C++ (csrc/ops/expfam_kl_autograd.cpp): per-call
    # Python would dominate at training-size batches. Its backward op only refuses a second one.
    refuse_double_backward("ivae_ext::expfam_kl_backward", "expfam_kl", "ivae_ext.reference.expfam_kl")
