"""Pure-PyTorch reference implementations: the oracle for tests, the baseline for benchmarks.

Written the way research code does it (elementwise torch ops, autograd for gradients), in the
stable forms of ../shared/DESIGN.md so that float64 comparisons are meaningful. Nothing here
calls the compiled extension.
"""

from __future__ import annotations

import math

import torch

FAMILIES = ("gaussian", "laplace")
REDUCTIONS = ("sum", "none")


def expfam_kl(
    q_loc: torch.Tensor,
    q_log_scale: torch.Tensor,
    p_loc: torch.Tensor,
    p_log_scale: torch.Tensor,
    family: str = "gaussian",
    reduction: str = "sum",
) -> torch.Tensor:
    """KL(q || p) for factorized q and p of one family, parametrised by location and log-scale.

    q's parameters are [B, d]; p's broadcast against them. Returns [B] ("sum") or [B, d] ("none").
    """
    if family == "gaussian":
        # KL = 1/2 (expm1(t) - t) + 1/2 ((mu_q - mu_p) / sigma_p)^2,  t = 2 (l_q - l_p)
        t = 2.0 * (q_log_scale - p_log_scale)
        z = (q_loc - p_loc) * torch.exp(-p_log_scale)
        kl = 0.5 * (torch.expm1(t) - t) + 0.5 * z * z
    elif family == "laplace":
        # KL = (v - u) + expm1(w) - w,  u = |D|/b_q, v = |D|/b_p, w = l_q - l_p - u; for w < -1
        # (u large) the same with u cancelled: v + (l_p - l_q) + expm1(w) (u may be huge or inf)
        dist = (q_loc - p_loc).abs()
        u = dist * torch.exp(-q_log_scale)
        v = dist * torch.exp(-p_log_scale)
        w = q_log_scale - p_log_scale - u
        near = (v - u) + (torch.expm1(w) - w)
        far = v + (p_log_scale - q_log_scale) + torch.expm1(w)
        kl = torch.where(w < -1, far, near)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if reduction == "sum":
        return kl.sum(-1)
    if reduction == "none":
        return kl
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def icnn_potential(x, A, b, W, w, alpha) -> torch.Tensor:
    """ψ(x) of the input-convex network of DESIGN.md op 2, for x [B, d]; returns [B].

    a_0 = A_0 x + b_0, a_k = W_k σ(a_{k-1}) + A_k x + b_k, ψ = wᵀσ(a_{K-1}) + ½ α ‖x‖², σ = softplus.
    A [K, H, d], b [K, H], W [K-1, H, H] (entry k-1 is W_k), w [H], alpha float or 0-d tensor.
    """
    z = softplus(x @ A[0].T + b[0])
    for k in range(1, A.shape[0]):
        z = softplus(z @ W[k - 1].T + x @ A[k].T + b[k])
    # (α x) x: α = 0 contributes exactly 0 also where ‖x‖² would overflow (0·inf = NaN); dψ/dα is ½‖x‖² still
    return z @ w + 0.5 * (alpha * x * x).sum(-1)


def softplus(a: torch.Tensor) -> torch.Tensor:
    """log(1 + e^a), exact everywhere. (torch.nn.functional.softplus returns `a` itself above
    a = 20, an error of e^-20 ~ 2e-9: too coarse for a float64 oracle.)"""
    return torch.logaddexp(a, torch.zeros_like(a))


def icnn_map(x, A, b, W, w, alpha):
    """(ψ(x), ∇ψ(x)) with ∇ψ by autograd and create_graph=True: the way the seed papers'
    code trains through a Brenier map (double backpropagation)."""
    with torch.enable_grad():
        x_in = x if x.requires_grad else x.detach().requires_grad_()
        psi = icnn_potential(x_in, A, b, W, w, alpha)
        (grad,) = torch.autograd.grad(psi.sum(), x_in, create_graph=True)
    return psi, grad


def icnn_hessian(x, A, b, W, w, alpha) -> torch.Tensor:
    """∇²ψ(x) [B, d, d] by torch.func: vmap over the batch of the Hessian of ψ at one point."""

    def potential_at(point):
        return icnn_potential(point.unsqueeze(0), A, b, W, w, alpha).squeeze(0)

    # contiguous: forward-mode AD cannot make a dual of a point whose elements share memory (an expanded x)
    return torch.func.vmap(torch.func.hessian(potential_at))(x.contiguous())


def brenier_logdet(x, A, b, W, w, alpha) -> torch.Tensor:
    """log det ∇²ψ(x) [B]: vmap(hessian) then slogdet (NaN where the Hessian is not positive
    definite, as the fused op's check=False)."""
    sign, logabsdet = torch.linalg.slogdet(icnn_hessian(x, A, b, W, w, alpha))
    return torch.where(sign > 0, logabsdet, torch.full_like(logabsdet, float("nan")))


def brenier_logdet_bruteforce(x, A, b, W, w, alpha) -> torch.Tensor:
    """log det ∇²ψ(x) [B] the brute-force way of research code: ∇ψ by autograd, then one
    backward pass per input dimension (create_graph=True) to build the Hessian, then slogdet."""
    with torch.enable_grad():
        x_in = x if x.requires_grad else x.detach().requires_grad_()
        psi = icnn_potential(x_in, A, b, W, w, alpha)
        (grad,) = torch.autograd.grad(psi.sum(), x_in, create_graph=True)
        rows = [torch.autograd.grad(grad[:, j].sum(), x_in, create_graph=True)[0] for j in range(x.shape[1])]
    sign, logabsdet = torch.linalg.slogdet(torch.stack(rows, dim=1))
    return torch.where(sign > 0, logabsdet, torch.full_like(logabsdet, float("nan")))


def conjugate_gradient(hvp, v, tol: float, max_iter: int):
    """(u, iterations): solves H u = v for a batch [B, d] the way CP-Flow does (from its paper's
    code as described in ../shared/anchors/cp-flow.md): start at u = v, at most max_iter steps,
    stop when every entry of every sample's residual is below tol (the worst sample sets the count)."""
    u = v.clone()
    r = v - hvp(u)
    p = r.clone()
    rr = (r * r).sum(-1, keepdim=True)
    iterations = 0
    while iterations < max_iter and not bool((r.abs() < tol).all()):
        hp = hvp(p)
        # a sample whose residual is exactly 0 stays put (CP-Flow adds 1e-8 to the denominators
        # instead; here 0/0 must not turn a solved sample into NaN while another one iterates)
        solved = rr == 0
        step = torch.where(solved, torch.zeros_like(rr), rr / (p * hp).sum(-1, keepdim=True))
        u = u + step * p
        r = r - step * hp
        rr_next = (r * r).sum(-1, keepdim=True)
        p = r + torch.where(solved, torch.zeros_like(rr), rr_next / rr) * p
        rr = rr_next
        iterations += 1
    return u, iterations


def stochastic_logdet_surrogate(x, A, b, W, w, alpha, probes, tol: float = 1e-3, max_iter: int | None = None):
    """CP-Flow's training-time estimator of ∇ log det ∇²ψ(x), the way its code computes it: ∇ψ by
    autograd (create_graph), Hessian-vector products by double backpropagation, a conjugate-gradient
    solve u_p = H⁻¹ v_p without a graph, then the surrogate (1/P) Σ_p v_pᵀ H u_p [B] with u_p held
    fixed. probes: [P, B, d] (e.g. Rademacher). Its gradient is an unbiased estimate of the gradient
    of log det H (up to the solve's tolerance); its value is not a log-determinant (≈ v_pᵀ v_p).
    Returns (surrogate, the most CG iterations over the probes)."""
    if max_iter is None:
        max_iter = x.shape[1]
    with torch.enable_grad():
        x_in = x if x.requires_grad else x.detach().requires_grad_()
        psi = icnn_potential(x_in, A, b, W, w, alpha)
        (grad,) = torch.autograd.grad(psi.sum(), x_in, create_graph=True)

        def hvp(vector, create_graph=False):
            return torch.autograd.grad(grad, x_in, vector, create_graph=create_graph, retain_graph=True)[0]

        total, most = 0, 0
        for v in probes:
            with torch.no_grad():
                u, iterations = conjugate_gradient(hvp, v, tol, max_iter)
            total = total + (hvp(u, create_graph=True) * v).sum(-1)
            most = max(most, iterations)
    return total / probes.shape[0], most


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def component_log_density(z, loc, log_scale, family: str = "gaussian") -> torch.Tensor:
    """Elementwise log-density of N(loc, e^{2ℓ}) or Laplace(loc, e^ℓ) at z (broadcasting)."""
    if family == "gaussian":
        return -_HALF_LOG_2PI - log_scale - 0.5 * ((z - loc) * torch.exp(-log_scale)) ** 2
    if family == "laplace":
        return -math.log(2.0) - log_scale - (z - loc).abs() * torch.exp(-log_scale)
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def aggregate_log_q(z, q_loc, q_log_scale, family: str = "gaussian"):
    """(log q(z_i) [B], log q(z_ik) [B, d]) of the mixture q = (1/N) Σ_j q(·|x_j), the way the
    field computes it: the pairwise tensor log q(z_ik | x_j) of shape [B, N, d], then logsumexp
    over j. Costs B·N·d memory (and autograd keeps several such tensors)."""
    pairwise = component_log_density(z.unsqueeze(1), q_loc.unsqueeze(0), q_log_scale.unsqueeze(0), family)
    log_n = math.log(q_loc.shape[0])
    log_qz = torch.logsumexp(pairwise.sum(-1), dim=1) - log_n
    log_qz_marginals = torch.logsumexp(pairwise, dim=1) - log_n
    return log_qz, log_qz_marginals


IMQ_SCALES = (0.2, 0.4, 1.0, 2.0, 4.0, 10.0)


def imq_kernel(a, b, scales=IMQ_SCALES, per_dim: bool = True) -> torch.Tensor:
    """Σ_C C / (C + r) for every pair (a_i, b_j): r = (a_id - b_jd)² per dimension, [n, m, D]
    (per_dim), or r = ‖a_i - b_j‖², [n, m, 1]."""
    sq = (a.unsqueeze(1) - b.unsqueeze(0)) ** 2
    r = sq if per_dim else sq.sum(-1, keepdim=True)
    return sum(c / (c + r) for c in scales)


def imq_mmd(x, y, scales=IMQ_SCALES, per_dim: bool = True) -> torch.Tensor:
    """Unbiased MMD² between samples x [n, D] and y [m, D] with the inverse multiquadric kernel
    summed over `scales`, the way the decomposition-VAE code computes it: the [n, n, D], [m, m, D]
    and [n, m, D] kernel tensors (per_dim: the sum over d of the 1-D MMD² of column d), the
    within-sample diagonals masked out, and autograd for the gradients."""
    n, m = x.shape[0], y.shape[0]
    off_x = 1.0 - torch.eye(n, dtype=x.dtype, device=x.device).unsqueeze(-1)
    off_y = 1.0 - torch.eye(m, dtype=y.dtype, device=y.device).unsqueeze(-1)
    k_xx = (imq_kernel(x, x, scales, per_dim) * off_x).sum() / (n * (n - 1))
    k_yy = (imq_kernel(y, y, scales, per_dim) * off_y).sum() / (m * (m - 1))
    k_xy = imq_kernel(x, y, scales, per_dim).sum() / (n * m)
    return k_xx + k_yy - 2.0 * k_xy
