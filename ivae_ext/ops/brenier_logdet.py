"""Exact log-determinant of a Brenier map's Jacobian, log det ∇²ψ(x), for the ICNN ψ of icnn_map.

Kernels: ``torch.ops.ivae_ext.brenier_logdet`` / ``brenier_logdet_backward`` (csrc/). The
Hessian comes from a forward-mode Jacobian recurrence (GEMMs over the batch) and a per-sample
Cholesky factorisation (DESIGN.md op 3). Without the compiled op the reference (vmap(hessian)
and slogdet) runs instead.

Hessians that are not positive definite (α = 0 with saturated units, or weights that break
convexity) have no real log-determinant. Policy: with ``check=True`` (default) such a sample is
an error (ValueError naming how many samples and the first one); with ``check=False`` its
logdet is NaN, and ``return_info=True`` also returns the per-sample status (0: fine; k > 0: the
leading minor of order k is not positive definite; -1: the Hessian was not finite, e.g. NaN in
x). The check reads the status back to the host, a synchronisation on CUDA.
"""

from __future__ import annotations

import torch

from ivae_ext import reference
from ivae_ext._extension import HAS_EXTENSION
from ivae_ext.ops._autograd import records_graph, refuse_double_backward
from ivae_ext.ops._switch import reference_ops_enabled
from ivae_ext.ops._checks import raise_if_not_positive_definite, require_tensors
from ivae_ext.ops.icnn_map import _ARG_NAMES, _alpha_tensor, _check_alpha_value, _reference_icnn_map, check_icnn_args

HAS_FUSED_LOGDET = HAS_EXTENSION and hasattr(torch.ops.ivae_ext, "brenier_logdet")
_OP = "brenier_logdet"


def _raise_if_not_positive_definite(info: torch.Tensor) -> None:
    raise_if_not_positive_definite(_OP, info > 0, lambda first: f", leading minor of order {int(info[first])}")


def _reference_with_info(x, A, b, W, w, alpha):
    """The op's four outputs from the reference: ψ and ∇ψ of reference.icnn_map (as icnn_map's
    reference path), logdet of reference.brenier_logdet, and the status from a Cholesky
    factorisation of the reference Hessian (recomputed without a graph: only its status is used),
    with the fused op's policy: NaN logdet wherever the status is not 0."""
    psi, grad = _reference_icnn_map(x, A, b, W, w, alpha)
    with torch.no_grad():
        hess = reference.icnn_hessian(x, A, b, W, w, alpha)
        _, info = torch.linalg.cholesky_ex(hess)
        finite = torch.isfinite(hess).flatten(1).all(-1)
        info = torch.where(finite, info, torch.full_like(info, -1))
    logdet = reference.brenier_logdet(x, A, b, W, w, alpha)
    logdet = torch.where(info == 0, logdet, torch.full_like(logdet, float("nan")))
    if not records_graph(x, A, b, W, w, alpha):
        logdet = logdet.detach()
    return psi, grad, logdet, info


def brenier_map_logdet(x, A, b, W, w, alpha=0.0, check: bool = True, return_info: bool = False):
    """(ψ(x) [B], ∇ψ(x) [B, d], log det ∇²ψ(x) [B]) in one pass: what a convex-potential flow
    needs. Arguments as :func:`ivae_ext.ops.icnn_map`; ``check`` and ``return_info`` as in this
    module's docstring (with return_info, a fourth output: int32 status [B]).

    Differentiable once in every argument through any of the three outputs (analytic backward);
    a second backward raises an error. Intermediates beyond the dtype's range — as icnn_map, and
    here also the products J_k M J_kᵀ of the Jacobians J_k = ∂a_k/∂x (up to |J|², e.g. A ~1e20 in
    float32) — give unspecified results (the backward's inf·0 is NaN). Use float64 there.

    Under ``ivae_ext.ops.use_reference_ops()`` (and without the compiled op) the same argument
    checks, then ψ and ∇ψ from ``ivae_ext.reference.icnn_map``, logdet from
    ``ivae_ext.reference.brenier_logdet`` and the status from a Cholesky factorisation of
    ``ivae_ext.reference.icnn_hessian``: the same outputs, the same check/return_info policy
    (differentiable twice there).
    """
    for name, flag in (("check", check), ("return_info", return_info)):
        if not isinstance(flag, bool):
            raise TypeError(f"{_OP}: {name} must be a bool, got {type(flag).__name__}")
    require_tensors(_OP, _ARG_NAMES, (x, A, b, W, w))
    alpha = _alpha_tensor(alpha, x, _OP)
    if not HAS_FUSED_LOGDET or reference_ops_enabled():
        check_icnn_args(x, A, b, W, w, alpha, _OP)
        _check_alpha_value(alpha.item(), _OP)
        if x.dtype not in (torch.float32, torch.float64):  # torch.linalg.cholesky_ex has no half kernels
            raise TypeError(f"{_OP}: the reference path takes float32 or float64, got {x.dtype}")
        psi, grad, logdet, info = _reference_with_info(x, A, b, W, w, alpha)
    else:
        keep = torch.is_grad_enabled() and any(t.requires_grad for t in (x, A, b, W, w, alpha))
        psi, grad, logdet, info, *_ = torch.ops.ivae_ext.brenier_logdet.default(x, A, b, W, w, alpha, keep)
    if check:
        _raise_if_not_positive_definite(info)
    return (psi, grad, logdet, info) if return_info else (psi, grad, logdet)


def brenier_logdet(x, A, b, W, w, alpha=0.0, check: bool = True, return_info: bool = False):
    """log det ∇²ψ(x) [B], the log-Jacobian-determinant of the Brenier map x ↦ ∇ψ(x), exact.
    See :func:`brenier_map_logdet`; with return_info, (logdet, status)."""
    out = brenier_map_logdet(x, A, b, W, w, alpha, check=check, return_info=True)
    return (out[2], out[3]) if return_info else out[2]


if HAS_FUSED_LOGDET:

    @torch.library.register_fake("ivae_ext::brenier_logdet")
    def _brenier_logdet_fake(x, A, b, W, w, alpha, keep_for_backward):
        check_icnn_args(x, A, b, W, w, alpha, _OP)
        batch, dim = x.shape
        layers, hidden = A.shape[0], A.shape[1]
        kept = batch if keep_for_backward else 0
        return (
            x.new_empty((batch,)), x.new_empty((batch, dim)), x.new_empty((batch,)),
            x.new_empty((batch,), dtype=torch.int32), x.new_empty((2, layers, batch, hidden)),
            x.new_empty((kept, dim, layers * hidden)), x.new_empty((kept, dim, dim)),
        )

    @torch.library.register_fake("ivae_ext::brenier_logdet_backward")
    def _brenier_logdet_backward_fake(grad_logdet, x, A, b, W, w, alpha, saved, jac, minv, output_mask):
        check_icnn_args(x, A, b, W, w, alpha, _OP)
        inputs = (x, A, b, W, w, alpha)
        return tuple(t.new_empty(t.shape if wanted else (0,)) for t, wanted in zip(inputs, output_mask))

    # brenier_logdet's autograd is registered in C++ (csrc/ops/brenier_logdet_autograd.cpp).
    refuse_double_backward("ivae_ext::brenier_logdet_backward", _OP, "ivae_ext.reference.brenier_logdet")
