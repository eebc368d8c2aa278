"""Unbiased MMD² with the inverse multiquadric kernel (DESIGN.md op 5): wrapper, fake kernels,
autograd.

The kernel is ``torch.ops.ivae_ext.imq_mmd`` (csrc/): one pass over the pairs gives the value
and, for the inputs that need them, the gradients dMMD²/dx and dMMD²/dy — the output is a scalar,
so the backward (``imq_mmd_backward``) only multiplies them by the incoming gradient. Computing
them in the forward costs about 1.7× the value alone (per_dim, B = 500, D = 50, float32, one
thread: 40 ms against 23 ms); a separate backward would visit the pairs again (about 2.7× in all).
Without the compiled extension (and under ``use_reference_ops()``) the wrapper runs
``ivae_ext.reference.imq_mmd``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ivae_ext import reference
from ivae_ext._extension import HAS_EXTENSION
from ivae_ext.ops._autograd import refuse_double_backward
from ivae_ext.ops._switch import reference_ops_enabled

DEFAULT_SCALES = reference.IMQ_SCALES  # C ∈ {0.2, 0.4, 1, 2, 4, 10}: the decomposition-VAE anchor's
_FLOAT32_SCALE_RANGE = (1e-30, 1e30)


def imq_scales(scales) -> tuple[float, ...]:
    """The kernel scales as a tuple of floats: from a sequence of numbers or a 1-D floating-point
    tensor (its values: no gradient flows to them). Non-empty, each positive and finite."""
    if isinstance(scales, torch.Tensor):
        if scales.dim() != 1 or not scales.is_floating_point():
            raise ValueError(
                f"imq_mmd: scales must be a 1-D floating-point tensor or a sequence of floats, "
                f"got a tensor of shape {list(scales.shape)} and dtype {scales.dtype}"
            )
        if scales.requires_grad:
            raise ValueError("imq_mmd: scales must not require grad (the op has no gradient for its kernel scales)")
        values = tuple(float(c) for c in scales.detach().cpu().tolist())
    elif isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
        raise TypeError(f"imq_mmd: scales must be a sequence of floats or a 1-D tensor, got {type(scales).__name__}")
    else:
        if any(isinstance(c, (bool, str, bytes)) for c in scales):  # float(True) and float("2") would pass
            raise TypeError(f"imq_mmd: scales must be a sequence of floats, got {scales!r}")
        try:
            values = tuple(float(c) for c in scales)
        except (TypeError, ValueError):
            raise TypeError(f"imq_mmd: scales must be a sequence of floats, got {scales!r}") from None
    if not values:
        raise ValueError("imq_mmd: scales must hold at least one kernel scale, got none")
    for s, c in enumerate(values):
        if not (math.isfinite(c) and c > 0.0):
            raise ValueError(f"imq_mmd: scales must be positive and finite, got scales[{s}] = {c}")
    return values


def _check_types(x, y, per_dim) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"imq_mmd: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not isinstance(per_dim, bool):
        raise TypeError(f"imq_mmd: per_dim must be a bool, got {type(per_dim).__name__}")


def check_imq_mmd_args(x, y, scales, per_dim) -> None:
    """The op's argument contract, for fake tensors and the reference fallback.

    Mirrors csrc/common/imq_mmd_args.cpp, which checks the same things for real tensors
    (scales: a tuple of floats already through ``imq_scales``)."""
    _check_types(x, y, per_dim)
    for name, t in (("x", x), ("y", y)):
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"imq_mmd: {name} must be float32 or float64, got dtype {t.dtype}")
    if y.dtype != x.dtype:
        raise TypeError(f"imq_mmd: x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if y.device != x.device:
        raise ValueError(f"imq_mmd: x and y must be on the same device, got {x.device} and {y.device}")
    if x.dim() != 2:
        raise ValueError(f"imq_mmd: x must have shape [n, D], got {list(x.shape)}")
    if y.dim() != 2 or y.shape[1] != x.shape[1]:
        raise ValueError(f"imq_mmd: y must have shape [m, D] with x's D = {x.shape[1]}, got {list(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(
            f"imq_mmd: x must hold at least two samples (n >= 2) for the unbiased estimator, got shape {list(x.shape)}"
        )
    if y.shape[0] < 2:
        raise ValueError(
            f"imq_mmd: y must hold at least two samples (m >= 2) for the unbiased estimator, got shape {list(y.shape)}"
        )
    if not scales:
        raise ValueError("imq_mmd: scales must hold at least one kernel scale, got none")
    low, high = _FLOAT32_SCALE_RANGE
    for s, c in enumerate(scales):
        if not (math.isfinite(c) and c > 0.0):
            raise ValueError(f"imq_mmd: scales must be positive and finite, got scales[{s}] = {c}")
        if x.dtype == torch.float32 and not low <= c <= high:
            raise ValueError(f"imq_mmd: scales must lie in [1e-30, 1e30] for float32 inputs, got scales[{s}] = {c}")


def imq_mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    scales: Sequence[float] | torch.Tensor = DEFAULT_SCALES,
    per_dim: bool = True,
) -> torch.Tensor:
    r"""Unbiased MMD² between samples x [n, D] and y [m, D] with an inverse multiquadric kernel.

    k(a, b) = Σ_{C ∈ scales} C / (C + r(a, b)) and

        MMD² = Σ_{i≠j} k(x_i, x_j) / (n(n−1)) + Σ_{i≠j} k(y_i, y_j) / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / (nm).

    Args:
        x, y: [n, D] and [m, D] samples (n, m >= 2: the within-sample sums need two), float32 or
            float64, one device. Gradients flow to both.
        scales: the kernel scales C, a sequence of positive finite floats or a 1-D tensor of them
            (constants: no gradient; under torch.compile pass a tuple, a tensor's values are read
            on the host). Default: the anchor's (0.2, 0.4, 1, 2, 4, 10). For float32 inputs they
            must lie in [1e-30, 1e30].
        per_dim: True (the decomposition VAE's ``mmd_dim``): the sum over dimensions d of the
            one-dimensional MMD² of column d, r = (a_d − b_d)² — it compares the marginals only.
            False: one MMD² of the joint distributions, r = ‖a − b‖².

    Returns:
        A 0-dim tensor of x's dtype. It can be negative (the estimator is unbiased, not
        non-negative); its expectation is 0 when x and y come from the same distribution.

    The kernel streams over the pairs in tiles (i < j only within a sample: the sums are
    symmetric) and never holds an [n, m] or [n, m, D] tensor; sums are kept in double, float32
    pairs are summed in float over at most one tile (128 pairs) first. When grad mode is on and x
    or y requires grad, the same pass also computes dMMD²/dx and dMMD²/dy (∂k/∂a = −2(a − b)
    Σ_C C/(C + r)²), which the backward scales: about 1.7× the cost of the value alone, no second
    pass over the pairs. Deterministic: the same result for any thread count. Second derivatives are not
    supported (a clear error; use ``ivae_ext.reference.imq_mmd``).

    NaN policy: a NaN in x or y gives a NaN result (and NaN gradients where it reaches), as the
    reference does; it is not an error, because detecting it would cost a pass over the inputs
    (a device synchronisation on CUDA) on every call. ±inf inputs give NaN or 0 contributions.

    Under ``ivae_ext.ops.use_reference_ops()`` (and without the compiled extension) this is
    ``ivae_ext.reference.imq_mmd`` after the same argument checks ([n, m, D] memory).
    """
    scales = imq_scales(scales)
    if not HAS_EXTENSION or reference_ops_enabled():
        check_imq_mmd_args(x, y, scales, per_dim)
        return reference.imq_mmd(x, y, scales, per_dim)
    _check_types(x, y, per_dim)  # the kernel checks the rest
    grad_enabled = torch.is_grad_enabled()
    mask = [grad_enabled and x.requires_grad, grad_enabled and y.requires_grad]
    value, _, _ = torch.ops.ivae_ext.imq_mmd.default(x, y, list(scales), per_dim, mask)
    return value


if HAS_EXTENSION:

    @torch.library.register_fake("ivae_ext::imq_mmd")
    def _imq_mmd_fake(x, y, scales, per_dim, output_mask):
        check_imq_mmd_args(x, y, tuple(scales), per_dim)
        grads = tuple(t.new_empty(t.shape if wanted else (0,)) for t, wanted in zip((x, y), output_mask))
        return (x.new_empty(()), *grads)

    @torch.library.register_fake("ivae_ext::imq_mmd_backward")
    def _imq_mmd_backward_fake(grad, x, y, grad_x, grad_y, output_mask):
        return tuple(t.new_empty(t.shape if wanted else (0,)) for t, wanted in zip((x, y), output_mask))

    def _setup_context(ctx, inputs, output):
        x, y, _scales, _per_dim, output_mask = inputs
        _value, grad_x, grad_y = output
        # The gradient outputs are the backward's material, not values to differentiate: marked so,
        # a second derivative goes through imq_mmd_backward, which refuses it.
        ctx.mark_non_differentiable(grad_x, grad_y)
        ctx.set_materialize_grads(False)  # no zero [n, D] tensors for the two outputs nobody differentiates
        ctx.save_for_backward(x, y, grad_x, grad_y)
        ctx.output_mask = [bool(flag) for flag in output_mask]

    def _backward(ctx, grad, _grad_grad_x, _grad_grad_y):
        x, y, grad_x, grad_y = ctx.saved_tensors
        wanted = [bool(flag) for flag in ctx.needs_input_grad[:2]]
        for name, need, have in zip(("x", "y"), wanted, ctx.output_mask):
            if need and not have:
                raise RuntimeError(
                    f"ivae_ext::imq_mmd was called with output_mask[{'xy'.index(name)}] = False, so no gradient "
                    f"for {name} was computed; call ivae_ext.ops.imq_mmd, which sets the mask from requires_grad"
                )
        if grad is None or not any(wanted):  # None: an undefined upstream gradient (zero)
            return None, None, None, None, None
        gx, gy = torch.ops.ivae_ext.imq_mmd_backward.default(grad, x, y, grad_x, grad_y, wanted)
        return (gx if wanted[0] else None), (gy if wanted[1] else None), None, None, None

    torch.library.register_autograd("ivae_ext::imq_mmd", _backward, setup_context=_setup_context)
    refuse_double_backward("ivae_ext::imq_mmd_backward", "imq_mmd", "ivae_ext.reference.imq_mmd")
