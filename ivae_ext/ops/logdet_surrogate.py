"""Stochastic gradient surrogate of log det ∇²ψ(x) for training convex-potential flows: CP-Flow's
estimator (../shared/anchors/cp-flow.md) with its Hessian-vector products and conjugate-gradient
iterations done analytically — no autograd graph per iteration.

For Rademacher probes v_p (p = 1..P) and u_p = H⁻¹ v_p (conjugate gradient to tolerance `tol`),
the surrogate is S = (1/P) Σ_p v_pᵀ H(x; θ) u_p with u_p held fixed. Because E[v vᵀ] = I, the
gradient of S with respect to x and every parameter is an unbiased estimate of the gradient of
log det H = tr(H⁻¹ ∂H) (up to the solve's tolerance). Its VALUE is not a log-determinant (it is
≈ ‖v‖² = d); evaluate densities with the exact ``brenier_logdet``.

The math (DESIGN.md op 3, with s_k the reverse-sweep vectors and c_k = s_k ⊙ σ''(a_k)):
H u = α u + Σ_k J_kᵀ (c_k ⊙ J_k u), where J_k u is the forward tangent ȧ_k of the pre-activations
along u. So vᵀ H u = α uᵀv + Σ_k ⟨c_k, ȧ_k(u) ⊙ ȧ_k(v)⟩ — a function of the forward pass
(a_k, s_k) and two tangent chains, whose gradient is one reverse sweep through the s recurrence
(upwards) and through the tangent and primal chains (downwards); see ``_surrogate_backward``.
Checked against autograd third derivatives and, averaged over all 2^d sign vectors, against the
exact gradient of log det (tests/test_logdet_surrogate.py).

Conjugate gradient here differs from CP-Flow's in two ways that do not change what it solves:
it starts at u = 0 (CP-Flow starts at u = v, one Hessian-vector product more), and it stops each
sample when every entry of its residual is below tol (CP-Flow keeps iterating every sample until
the worst one has converged): converged rows leave the batch. Iterations are capped at max_iter
(default d, as CP-Flow); a sample that reaches the cap keeps its last iterate, as there.
A Hessian that is not positive definite (the solve meets pᵀHp ≤ 0) has no log-determinant:
``check=True`` raises an error naming the sample; with ``check=False`` that sample's surrogate is
NaN (and so are the gradients it reaches) and its iteration count is -1. A Hessian that is not
finite (NaN in x, or an ICNN overflowing its dtype) gives NaN and -2 and is not an error (NaN
propagates), as brenier_logdet's status -1.

The Hessian-vector products are GEMMs over the batch (ATen: CPU and CUDA alike); the forward and
the ψ/∇ψ part of the backward are the fused icnn_map kernels. Under ``use_reference_ops()`` (and
without the compiled extension) ``ivae_ext.reference.stochastic_logdet_surrogate`` runs instead:
autograd double backpropagation, CP-Flow's own CG schedule.
"""

from __future__ import annotations

import os

import torch

from ivae_ext import reference
from ivae_ext.ops._checks import raise_if_not_positive_definite, require_tensors
from ivae_ext.ops._switch import reference_ops_enabled
from ivae_ext.ops.icnn_map import (
    _ARG_NAMES, HAS_FUSED_ICNN, _alpha_tensor, _check_alpha_value, _reference_icnn_map, check_icnn_args,
)

_OP = "stochastic_logdet_surrogate"
_NOT_POSITIVE_DEFINITE = -1  # iteration-count statuses (see the module docstring)
_NOT_FINITE = -2
# the CPU's tiled solve (csrc/cpu/icnn_cg_tiled.cpp); other devices take _conjugate_gradient
_HAS_TILED_CG = HAS_FUSED_ICNN and hasattr(torch.ops.ivae_ext, "icnn_conjugate_gradient")
# Widest H at which the CPU solve takes the tiles. Measured (float32, condition-5 Hessians, time of
# the ATen solve / the tiled one): B = 1024, d = 16, H = 64: 1.7 (1 thread), 1.8 (2 threads);
# B = 256, d = 64, H = 128: 1.17, 1.23. Wider than this, untested: MKL's GEMMs may win (they do
# for icnn_map beyond H = 64, csrc/cpu/icnn_packing.h).
_TILED_CG_MAX_HIDDEN = 128


def _uses_tiled_cg(x: torch.Tensor, hidden: int) -> bool:
    """The CPU's tiled solve, unless IVAE_ICNN_CPU_PATH=aten (or =tiles forces it at any H)."""
    if x.device.type != "cpu" or not _HAS_TILED_CG:
        return False
    path = os.environ.get("IVAE_ICNN_CPU_PATH")
    if path in ("aten", "tiles"):
        return path == "tiles"
    return hidden <= _TILED_CG_MAX_HIDDEN


# ------------------------------------------------------------------------------------------------
# The math on tensors (device-generic ATen calls)


def _softplus_second(a: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """σ''(a) = σ'(a) σ'(−a), accurate in both tails (as csrc/math/softplus.h); σ'(1 − σ') would
    lose it to cancellation for a ≫ 1 (all of it beyond a ≈ 37 in float64)."""
    return d1 * torch.sigmoid(-a)


def _curvature(saved: torch.Tensor):
    """(σ'(a_k), c_k = s_k ⊙ σ''(a_k)), each [K, n, H], from icnn_map's saved (a_k, s_k)."""
    d1 = torch.sigmoid(saved[0])
    return d1, saved[1] * _softplus_second(saved[0], d1)


def _hessian_vector(d1, c, A_rows, W, W_t, alpha, V):
    """∇²ψ V for rows V [n, d]: tangent ȧ_k = W_k(σ'_{k-1} ⊙ ȧ_{k-1}) + A_k V forward, then
    ā_k = c_k ⊙ ȧ_k + σ'_k ⊙ (ā_{k+1} W_{k+1}) back, and Σ_k ā_k A_k + α V."""
    layers, hidden = d1.shape[0], d1.shape[-1]
    tangent = list(torch.mm(V, A_rows.t()).split(hidden, dim=1))
    for k in range(1, layers):
        tangent[k] = torch.addmm(tangent[k], tangent[k - 1] * d1[k - 1], W_t[k - 1])
    adjoint = torch.empty_like(torch.cat(tangent, 1)) if layers > 1 else None
    top = c[layers - 1] * tangent[layers - 1]
    if layers == 1:
        return torch.addmm(V * alpha, top, A_rows)
    blocks = list(adjoint.split(hidden, dim=1))
    blocks[layers - 1].copy_(top)
    for k in range(layers - 1, 0, -1):
        torch.addcmul(c[k - 1] * tangent[k - 1], torch.mm(blocks[k], W[k - 1]), d1[k - 1], out=blocks[k - 1])
    return torch.addmm(V * alpha, adjoint, A_rows)


def _conjugate_gradient(d1, c, A, W, alpha, v, tol: float, max_iter: int):
    """(u [n, d], residual v - H u [n, d], iterations [n] int32): H u = v per row, H the Hessian
    whose curvature factors (d1, c) are [K, n, H]. A row stops once every entry of its residual is
    below tol; once a quarter of the rows have stopped, they leave the batch (before that they
    ride along with a zero step: cheaper than compacting every time). A row that meets pᵀHp <= 0
    gets u = NaN and iterations = -1 (not positive definite) or -2 (NaN: not finite)."""
    layers, hidden, dim = A.shape
    A_rows = A.reshape(layers * hidden, dim)
    W_t = W.transpose(1, 2).contiguous()
    n = v.shape[0]
    u = torch.zeros_like(v)
    residual = v.clone()  # full-size: rows that leave the batch store their final residual here
    iterations = torch.zeros(n, dtype=torch.int32, device=v.device)
    rows = torch.arange(n, device=v.device)
    r, p = v.clone(), v.clone()
    rr = (r * r).sum(-1)
    active = (r.abs() >= tol).any(-1)
    done = 0
    while done < max_iter and rows.numel():
        count = int(active.sum())
        if count < rows.numel() * 3 // 4 or count == 0:  # compact (also u, r of the leaving rows)
            leaving = ~active
            residual.index_copy_(0, rows[leaving], r[leaving])
            keep = active.nonzero().squeeze(1)
            rows, r, p, rr, d1, c, active = rows[keep], r[keep], p[keep], rr[keep], d1[:, keep], c[:, keep], active[keep]
            if not rows.numel():
                break
        hp = _hessian_vector(d1, c, A_rows, W, W_t, alpha, p)
        curvature = (p * hp).sum(-1)
        positive = curvature > 0  # NaN compares false: a non-finite Hessian is flagged too
        step = torch.where(active & positive, rr / curvature, torch.zeros_like(rr))
        u.index_add_(0, rows, step.unsqueeze(1) * p)
        r = r - step.unsqueeze(1) * hp
        done += 1
        rr_next = (r * r).sum(-1)
        p = r + torch.where(active, rr_next / rr, torch.zeros_like(rr)).unsqueeze(1) * p
        rr = rr_next
        if not bool(positive[active].all()):
            bad = active & ~positive
            u.index_fill_(0, rows[bad], float("nan"))
            iterations.index_put_((rows[bad],), torch.where(torch.isfinite(curvature[bad]),
                                                            _NOT_POSITIVE_DEFINITE, _NOT_FINITE).to(torch.int32))
            r[bad] = float("nan")
            active = active & positive
        stopped = active & ~(r.abs() >= tol).any(-1)
        iterations.index_fill_(0, rows[stopped], done)
        active = active & ~stopped
    residual.index_copy_(0, rows, r)
    capped = rows[active] if rows.numel() else rows
    iterations.index_fill_(0, capped, done)  # rows stopped by the cap
    return u, residual, iterations


def _softplus(a: torch.Tensor) -> torch.Tensor:
    """σ(a), exact also above a = 20 in float64 (torch's softplus returns a there: 2e-9 off)."""
    if a.dtype == torch.float64:
        return a.clamp(min=0) + torch.log1p(torch.exp(-a.abs()))
    return torch.nn.functional.softplus(a)


def _surrogate_backward(grad_surrogate, x, A, W, w, alpha, saved, d1, c, u, v, grad_psi=None, grad_grad=None):
    """Gradients (x, A, b, W, w, alpha) of Σ_b S̄_b v_bᵀ H(x_b) u_b with u, v fixed [n, d].

    With ȧ^u_k, ȧ^v_k the tangents along u and v and p_k = ȧ^u_k ⊙ ȧ^v_k, S = α u·v + Σ_k ⟨s_k ⊙ σ''(a_k), p_k⟩:
    - direct: ∂S/∂s_k = σ''_k p_k, ∂S/∂a_k = s_k σ'''_k p_k, ∂S/∂ȧ^u_k = c_k ȧ^v_k (and u ↔ v);
    - the s recurrence s_{k-1} = (s_k ⊙ σ'_k) W_k, s_{K-1} = w, adjoint upwards (k = 0 → K-1);
    - the tangent chains ȧ_k = (σ'_{k-1} ⊙ ȧ_{k-1}) W_kᵀ + (u, v) A_kᵀ and the primal chain
      a_k = σ(a_{k-1}) W_kᵀ + x A_kᵀ + b_k, adjoints downwards, stacked as [u rows; v rows; x rows]
      so that each step through W_k and each weight gradient is one GEMM.
    With grad_psi (ψ̄) and grad_grad (ḡ), also the gradients of Σ ψ̄ ψ + Σ ḡ·∇ψ, folded into the
    same sweeps (icnn_map's backward is not run): ḡ·∇ψ = Σ_k ⟨s_k ⊙ σ'_k, ḡ A_kᵀ⟩ + α x·ḡ adds
    σ'_k (ḡ A_kᵀ) to the adjoint of s_k and s_k σ''_k (ḡ A_kᵀ) to that of a_k; ψ = wᵀσ(a_{K-1}) + ½α‖x‖²
    adds ψ̄ w σ'_{K-1} to the adjoint of a_{K-1}."""
    layers, hidden, dim = A.shape
    n = x.shape[0]
    a, s = saved[0], saved[1]
    map_terms = grad_grad is not None
    d2 = _softplus_second(a, d1)
    sd1, sd2 = s * d1, s * d2
    A_rows = A.reshape(layers * hidden, dim)
    # rows of the stacked chains: [u; v; x] (+ [ḡ] for the map's own terms, whose A-gradient
    # (s_k ⊙ σ'_k)ᵀ ḡ rides along in the same batched GEMM)
    inputs = torch.cat([u, v, x, grad_grad] if map_terms else [u, v, x])
    rows = inputs.shape[0]
    # rows [0, 2n) of `values` hold the tangents ż^u, ż^v of each layer, rows [2n, 3n) z = σ(a)
    values = torch.empty((layers, 3 * n, hidden), dtype=x.dtype, device=x.device)
    tangent = torch.mm(inputs[:2 * n], A_rows.t()).view(2 * n, layers, hidden).transpose(0, 1).contiguous()
    for k in range(layers):
        if k:
            tangent[k].addmm_(values[k - 1, :2 * n], W[k - 1].t())
        torch.mul(tangent[k].view(2, n, hidden), d1[k], out=values[k, :2 * n].view(2, n, hidden))
    values[:, 2 * n:] = _softplus(a)
    g = grad_surrogate.view(1, n, 1)
    weighted = c * g
    products = torch.mul(tangent[:, :n], tangent[:, n:]).mul_(g)  # S̄ p_k
    # adjoints of [ȧ^u; ȧ^v; a] (and the ḡ block) per layer, [K, rows, H]
    adjoint = torch.empty((layers, rows, hidden), dtype=x.dtype, device=x.device)
    torch.mul(weighted, tangent[:, n:], out=adjoint[:, :n])
    torch.mul(weighted, tangent[:, :n], out=adjoint[:, n:2 * n])
    primal = adjoint[:, 2 * n:3 * n]
    torch.mul(sd2, products, out=primal)
    primal.mul_(1 - 2 * d1)  # s σ'''(a) p, with σ''' = σ''(1 - 2σ')
    s_direct = d2 * products  # ∂/∂s_k of the surrogate
    if map_terms:
        torch.mul(s, d1, out=adjoint[:, 3 * n:])
        input_terms = torch.mm(grad_grad, A_rows.t()).view(n, layers, hidden).transpose(0, 1)  # ḡ A_kᵀ
        s_direct.addcmul_(d1, input_terms)
        primal.addcmul_(sd2, input_terms)
        primal[layers - 1].addcmul_(grad_psi.unsqueeze(1) * w, d1[layers - 1])
    W_bar = torch.empty_like(W)
    # the s recurrence, upwards: t is the adjoint of s_k
    t = s_direct[0]
    for k in range(1, layers):
        q = torch.mm(t, W[k - 1].t())  # adjoint of s_k ⊙ σ'_k
        torch.mm(sd1[k].t(), t, out=W_bar[k - 1])
        primal[k].addcmul_(q, sd2[k])
        t = s_direct[k].addcmul_(q, d1[k])
    w_bar = t.sum(0)
    # downwards through the tangent and primal chains
    for k in range(layers - 1, 0, -1):
        W_bar[k - 1].addmm_(adjoint[k, :3 * n].t(), values[k - 1])
        back = torch.mm(adjoint[k, :3 * n], W[k - 1])  # adjoints of [ż^u; ż^v; z] of layer k-1
        through = back[:2 * n].mul(tangent[k - 1]).view(2, n, hidden).sum(0)
        adjoint[k - 1, :2 * n].view(2, n, hidden).addcmul_(back[:2 * n].view(2, n, hidden), d1[k - 1])
        primal[k - 1].addcmul_(through, d2[k - 1]).addcmul_(back[2 * n:], d1[k - 1])
    A_bar = torch.bmm(adjoint.transpose(1, 2), inputs.expand(layers, rows, dim))
    x_bar = torch.bmm(primal, A).sum(0)
    b_bar = primal.sum(1)
    alpha_bar = (grad_surrogate * (u * v).sum(-1)).sum()
    if map_terms:
        w_bar.add_(torch.mv(values[layers - 1, 2 * n:].t(), grad_psi))  # Σ ψ̄ z_{K-1}
        x_bar = x_bar + alpha * torch.addcmul(grad_grad, x, grad_psi.unsqueeze(1))
        alpha_bar = alpha_bar + (x * torch.addcmul(grad_grad, x, grad_psi.unsqueeze(1), value=0.5)).sum()
    return x_bar, A_bar, b_bar, W_bar, w_bar, alpha_bar


# ------------------------------------------------------------------------------------------------
# The custom op: forward (ψ, ∇ψ, surrogate) and its backward


@torch.library.custom_op("ivae_ext::brenier_surrogate", mutates_args=())
def _brenier_surrogate(x: torch.Tensor, A: torch.Tensor, b: torch.Tensor, W: torch.Tensor, w: torch.Tensor,
                       alpha: torch.Tensor, probes: torch.Tensor, tol: float, max_iter: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ψ [B], ∇ψ [B, d], surrogate [B], iterations [B] int32, saved [2, K, B, H], solutions [P, B, d])."""
    psi, grad, saved = torch.ops.ivae_ext.icnn_map.default(x, A, b, W, w, alpha)
    count, batch, dim = probes.shape
    flat = probes.reshape(count * batch, dim)
    if _uses_tiled_cg(x, A.shape[1]):
        u, residual, iterations = torch.ops.ivae_ext.icnn_conjugate_gradient.default(
            x, A, b, W, w, alpha, saved, probes, tol, max_iter)
        u, residual = u.view(count * batch, dim), residual.view(count * batch, dim)
    else:
        d1, c = _curvature(saved)
        if count > 1:
            d1, c = d1.repeat(1, count, 1), c.repeat(1, count, 1)
        u, residual, iterations = _conjugate_gradient(d1, c, A.contiguous(), W.contiguous(), alpha, flat, tol,
                                                      max_iter)
    # S = (1/P) Σ_p v_pᵀ H u_p, with H u_p = v_p - r_p from the solve's residual
    surrogate = (flat * (flat - residual)).sum(-1).view(count, batch).mean(0)
    iterations = iterations.view(count, batch)
    # over the probes: -1 if any probe met pᵀHp <= 0, else -2 if any met NaN, else the most
    status = torch.where((iterations == _NOT_POSITIVE_DEFINITE).any(0), _NOT_POSITIVE_DEFINITE,
                         torch.where((iterations == _NOT_FINITE).any(0), _NOT_FINITE, 0)).to(torch.int32)
    iterations = torch.where(status < 0, status, iterations.amax(0))
    return psi, grad, surrogate, iterations, saved, u.view(count, batch, dim)


@_brenier_surrogate.register_fake
def _brenier_surrogate_fake(x, A, b, W, w, alpha, probes, tol, max_iter):
    batch, dim = x.shape
    layers, hidden = A.shape[0], A.shape[1]
    return (x.new_empty((batch,)), x.new_empty((batch, dim)), x.new_empty((batch,)),
            x.new_empty((batch,), dtype=torch.int32), x.new_empty((2, layers, batch, hidden)),
            x.new_empty(probes.shape))


@torch.library.custom_op("ivae_ext::brenier_surrogate_backward", mutates_args=())
def _brenier_surrogate_backward(grad_psi: torch.Tensor, grad_grad: torch.Tensor, grad_surrogate: torch.Tensor,
                                x: torch.Tensor, A: torch.Tensor, b: torch.Tensor, W: torch.Tensor, w: torch.Tensor,
                                alpha: torch.Tensor, probes: torch.Tensor, saved: torch.Tensor,
                                solutions: torch.Tensor) -> list[torch.Tensor]:
    """Gradients for (x, A, b, W, w, alpha): icnn_map's fused backward for (ψ̄, ḡ) plus the
    surrogate's sweep for S̄ (each probe weighted 1/P)."""
    count = probes.shape[0]
    d1, c = _curvature(saved)
    A_c, W_c, x_c = A.contiguous(), W.contiguous(), x.contiguous()
    weight = grad_surrogate / count
    grads = _surrogate_backward(weight, x_c, A_c, W_c, w, alpha, saved, d1, c, solutions[0], probes[0], grad_psi,
                                grad_grad)
    for p in range(1, count):
        extra = _surrogate_backward(weight, x_c, A_c, W_c, w, alpha, saved, d1, c, solutions[p], probes[p])
        grads = [total + part for total, part in zip(grads, extra)]
    return list(grads)


@_brenier_surrogate_backward.register_fake
def _brenier_surrogate_backward_fake(grad_psi, grad_grad, grad_surrogate, x, A, b, W, w, alpha, probes, saved,
                                     solutions):
    return [t.new_empty(t.shape) for t in (x, A, b, W, w, alpha)]


def _setup_context(ctx, inputs, output):
    x, A, b, W, w, alpha, probes, _tol, _max_iter = inputs
    _psi, _grad, _surrogate, iterations, saved, solutions = output
    ctx.save_for_backward(x, A, b, W, w, alpha, probes, saved, solutions)
    # no zero-filled [2, K, B, H] gradient for the saved activations (nor the others) in backward
    ctx.mark_non_differentiable(iterations, saved, solutions)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_psi, grad_grad, grad_surrogate, _g_iterations, _g_saved, _g_solutions):
    x, A, b, W, w, alpha, probes, saved, solutions = ctx.saved_tensors
    grad_psi = torch.zeros_like(x[:, 0]) if grad_psi is None else grad_psi.contiguous()
    grad_grad = torch.zeros_like(x) if grad_grad is None else grad_grad.contiguous()
    grad_surrogate = torch.zeros_like(x[:, 0]) if grad_surrogate is None else grad_surrogate.contiguous()
    grads = _brenier_surrogate_backward(grad_psi, grad_grad, grad_surrogate, x, A, b, W, w, alpha, probes, saved,
                                        solutions)
    wanted = ctx.needs_input_grad
    return tuple(g if wanted[i] else None for i, g in enumerate(grads)) + (None, None, None)


torch.library.register_autograd("ivae_ext::brenier_surrogate", _backward, setup_context=_setup_context)


def _refuse_double_backward(ctx, *grads):
    raise RuntimeError(f"ivae_ext.ops.{_OP}: double backward is not supported (the surrogate is already a "
                       f"third-derivative quantity); use ivae_ext.reference.stochastic_logdet_surrogate")


torch.library.register_autograd("ivae_ext::brenier_surrogate_backward", _refuse_double_backward,
                                setup_context=lambda ctx, inputs, output: None)


# ------------------------------------------------------------------------------------------------
# Public functions


def _check_options(probes, tol, max_iter, generator, check, return_info, x) -> int:
    for name, flag in (("check", check), ("return_info", return_info)):
        if not isinstance(flag, bool):
            raise TypeError(f"{_OP}: {name} must be a bool, got {type(flag).__name__}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"{_OP}: probes must be an int >= 1, got {probes!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < float("inf"):
        raise ValueError(f"{_OP}: tol must be a finite float >= 0 (the residual bound per entry), got {tol!r}")
    if max_iter is None:
        max_iter = x.shape[1] if x.dim() == 2 else 0
    elif isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"{_OP}: max_iter must be an int >= 1 or None (= d), got {max_iter!r}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{_OP}: generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != x.device.type:
            raise ValueError(f"{_OP}: generator is on {generator.device}, x on {x.device}: they must match")
    return max_iter


def rademacher_probes(count: int, batch: int, dim: int, like: torch.Tensor, generator=None) -> torch.Tensor:
    """[count, batch, dim] entries ±1 in like's dtype and device (CP-Flow's probe)."""
    bits = torch.randint(0, 2, (count, batch, dim), generator=generator, device=like.device, dtype=like.dtype)
    return bits * 2 - 1


def _raise_if_flagged(iterations: torch.Tensor) -> None:
    raise_if_not_positive_definite(_OP, iterations == _NOT_POSITIVE_DEFINITE,
                                   lambda first: "; conjugate gradient met pᵀHp <= 0")


def brenier_map_surrogate(x, A, b, W, w, alpha=0.0, probes: int = 1, tol: float = 1e-3, max_iter: int | None = None,
                          generator: torch.Generator | None = None, check: bool = True, return_info: bool = False):
    """(ψ(x) [B], ∇ψ(x) [B, d], surrogate [B]) in one pass: what a convex-potential flow trains with
    (see this module's docstring; the surrogate's gradient, not its value, estimates that of
    log det ∇²ψ). With return_info, a fourth output: CG iterations per sample [B] int32 (the most
    over its probes; -1 where the Hessian is not positive definite, -2 where it is not finite).

    Args as :func:`ivae_ext.ops.icnn_map`, and:
        probes: P, Rademacher probes per sample (the gradient's variance falls as 1/P).
        tol: stop a sample's conjugate gradient when every entry of its residual v - H u is below tol.
        max_iter: cap on the iterations (default d).
        generator: draws the probes (default: torch's global generator on x's device).
        check: raise if some Hessian is not positive definite (else NaN there).
    Differentiable once in every argument; a second backward raises an error.
    """
    require_tensors(_OP, _ARG_NAMES, (x, A, b, W, w))
    max_iter = _check_options(probes, tol, max_iter, generator, check, return_info, x)
    alpha = _alpha_tensor(alpha, x, _OP)
    check_icnn_args(x, A, b, W, w, alpha, _OP)
    if not x.dtype.is_floating_point or x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{_OP}: x must be float32 or float64, got {x.dtype}")
    _check_alpha_value(float(alpha.detach()), _OP)  # here, not in icnn_map's kernel: the error names this op
    v = rademacher_probes(probes, x.shape[0], x.shape[1], x, generator)
    if not HAS_FUSED_ICNN or reference_ops_enabled():
        psi, grad = _reference_icnn_map(x, A, b, W, w, alpha)
        surrogate, count = reference.stochastic_logdet_surrogate(x, A, b, W, w, alpha, v, tol, max_iter)
        with torch.no_grad():  # the status from the reference Hessian (CP-Flow's CG does not report one)
            hess = reference.icnn_hessian(x, A, b, W, w, alpha)
            finite = torch.isfinite(hess).flatten(1).all(-1)
            positive = torch.linalg.cholesky_ex(torch.where(finite[:, None, None], hess, torch.ones_like(hess)))[1] == 0
        status = torch.where(~finite, _NOT_FINITE, torch.where(positive, 0, _NOT_POSITIVE_DEFINITE)).to(torch.int32)
        iterations = torch.where(status < 0, status, torch.full_like(status, count))
        surrogate = torch.where(status < 0, torch.full_like(surrogate, float("nan")), surrogate)
    else:
        psi, grad, surrogate, iterations, _, _ = _brenier_surrogate(x, A, b, W, w, alpha, v, float(tol), max_iter)
    if check:
        _raise_if_flagged(iterations)
    return (psi, grad, surrogate, iterations) if return_info else (psi, grad, surrogate)


def stochastic_logdet_surrogate(x, A, b, W, w, alpha=0.0, probes: int = 1, tol: float = 1e-3,
                                max_iter: int | None = None, generator: torch.Generator | None = None,
                                check: bool = True, return_info: bool = False):
    """The surrogate [B] alone (see :func:`brenier_map_surrogate`); with return_info,
    (surrogate, iterations)."""
    out = brenier_map_surrogate(x, A, b, W, w, alpha, probes, tol, max_iter, generator, check, return_info=True)
    return (out[2], out[3]) if return_info else out[2]


# ------------------------------------------------------------------------------------------------
# Which estimator is cheaper: a cost model for ConvexPotentialFlow(logdet="auto")

# Multiply-adds per sample of a training step (forward + backward), from the ops' GEMM sequences:
# exact — the Jacobian recurrence (K-1)H²d, the Hessian KHd², Cholesky d³/3 (in the low-rank form,
# r = KH <= d/2: the capacitance matrix d r² and its Cholesky r³/3), about three times over for
# forward and backward; stochastic — one Hessian-vector product 2(K-1)H² + 2KHd per CG
# iteration plus about EXTRA_PRODUCTS of them for the forward and the third-order backward.
# EXACT_EFFICIENCY: how much faster per multiply-add the exact op ran than the stochastic one,
# measured here (benchmarks/flow_logdet_step.py, float32, 2 threads; see README).
EXTRA_PRODUCTS = 6.0
EXACT_EFFICIENCY = 1.0


def exact_step_cost(dim: int, hidden: int, layers: int) -> float:
    rank = layers * hidden
    if 2 * rank <= dim:  # brenier_logdet's low-rank form (flows keep α > 0 and W, w >= 0): Cap is r x r
        curvature = dim * rank**2 + rank**3 / 3.0
    else:
        curvature = rank * dim**2 + dim**3 / 3.0
    return 3.0 * ((layers - 1) * hidden**2 * dim + curvature) / EXACT_EFFICIENCY


def stochastic_step_cost(dim: int, hidden: int, layers: int, cg_iterations: float) -> float:
    product = 2.0 * (layers - 1) * hidden**2 + 2.0 * layers * hidden * dim
    return (cg_iterations + EXTRA_PRODUCTS) * product


def stochastic_is_cheaper(dim: int, hidden: int, layers: int, cg_iterations: float) -> bool:
    """Whether a training step through the stochastic surrogate is predicted faster than through
    the exact log det, given the expected CG iterations (per sample: both scale with the batch)."""
    return stochastic_step_cost(dim, hidden, layers, cg_iterations) < exact_step_cost(dim, hidden, layers)
