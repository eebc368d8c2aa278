"""Brenier map y = ∇ψ(x) of a strongly convex ICNN, and its inverse by damped Newton."""

from __future__ import annotations

import torch

from ivae_ext import reference
from ivae_ext.nn.icnn import ICNN, flatten_points
from ivae_ext.ops import brenier_map_logdet, brenier_map_surrogate, icnn_map


class BrenierMap(torch.nn.Module):
    """x ↦ ∇ψ(x) for ψ an ICNN (DESIGN.md op 2); a bijection of R^d when α > 0.

    Args are those of :class:`ICNN`; strong_convexity defaults to 1 here (map ≈ identity plus
    a convex-gradient perturbation) because inverse() needs α > 0.
    """

    def __init__(self, dim: int, hidden: int, layers: int, strong_convexity: float = 1.0,
                 learn_strong_convexity: bool = False, dtype=None, device=None):
        super().__init__()
        self.potential = ICNN(dim, hidden, layers, strong_convexity, learn_strong_convexity, dtype=dtype, device=device)
        self.dim = dim

    def forward(self, x: torch.Tensor, return_potential: bool = False):
        """∇ψ(x) [..., d] for x [..., d]; with return_potential, (∇ψ(x), ψ(x) [...])."""
        psi, grad = self.potential.potential_and_gradient(x)
        return (grad, psi) if return_potential else grad

    def forward_with_logdet(self, x: torch.Tensor, check: bool = True):
        """(∇ψ(x) [..., d], log det ∇²ψ(x) [...]): the map and its exact log-Jacobian-determinant
        in one fused pass (ivae_ext.ops.brenier_map_logdet; check as there)."""
        flat = flatten_points(x, self.dim, f"{type(self).__name__}.forward_with_logdet")
        _, grad, logdet = brenier_map_logdet(flat, *self.potential.weights(), check=check)
        return grad.reshape(x.shape), logdet.reshape(x.shape[:-1])

    def forward_with_surrogate(self, x: torch.Tensor, probes: int = 1, tol: float = 1e-3, generator=None):
        """(∇ψ(x) [..., d], surrogate [...], CG iterations [...]): the map and the stochastic
        log-det gradient surrogate (ivae_ext.ops.brenier_map_surrogate) — train with its gradient;
        its value is not log det."""
        flat = flatten_points(x, self.dim, f"{type(self).__name__}.forward_with_surrogate")
        _, grad, surrogate, iterations = brenier_map_surrogate(flat, *self.potential.weights(), probes=probes, tol=tol,
                                                               generator=generator, return_info=True)
        return grad.reshape(x.shape), surrogate.reshape(x.shape[:-1]), iterations.reshape(x.shape[:-1])

    @torch.no_grad()
    def inverse(self, y: torch.Tensor, tol: float = 1e-6, max_iter: int = 50, x0: torch.Tensor | None = None):
        """x with ∇ψ(x) = y, for y [..., d]: per sample, minimises the strongly convex
        ψ(x) − ⟨x, y⟩ by Newton steps with backtracking (Armijo) line search.

        Converged when every sample's residual ‖∇ψ(x) − y‖₂ <= tol (absolute). x0 is an optional
        starting point (default 0). Returns x [..., d] without an autograd graph.
        Raises RuntimeError naming the largest residual reached if max_iter steps do not suffice.
        """
        name = f"{type(self).__name__}.inverse"
        flat_y = flatten_points(y, self.dim, name, "y")
        if not tol > 0:
            raise ValueError(f"{name}: tol must be > 0, got {tol!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
            raise ValueError(f"{name}: max_iter must be an int >= 0, got {max_iter!r}")
        A, b, W, w, alpha = (t.detach() for t in self.potential.weights())
        if not alpha.item() > 0:
            raise ValueError(f"{name}: needs strong_convexity α > 0 (with α = 0 ∇ψ need not be a "
                             f"bijection), got α = {alpha.item():g}")
        x = torch.zeros_like(flat_y) if x0 is None else flatten_points(x0, self.dim, name, "x0").clone()

        def objective(x, y):
            """f = ψ(x) − ⟨x, y⟩ [n] and its gradient ∇ψ(x) − y [n, d]."""
            psi, grad = icnn_map(x, A, b, W, w, alpha)
            return psi - (x * y).sum(-1), grad - y

        def hessian(x):
            # The fused op is differentiable once only, so Hess ψ comes from the plain-torch potential.
            single = lambda p: reference.icnn_potential(p[None], A, b, W, w, alpha)[0]  # noqa: E731
            return torch.func.vmap(torch.func.hessian(single))(x)

        f, g = objective(x, flat_y)
        residual = g.norm(dim=-1)
        for _ in range(max_iter):
            active = (residual > tol).nonzero().squeeze(-1)
            if active.numel() == 0:
                break
            xa, ya, fa, ga, ra = x[active], flat_y[active], f[active], g[active], residual[active]
            # Newton direction: Hess ψ ⪰ α I, so it is SPD and the direction descends.
            step = -torch.linalg.solve(hessian(xa), ga.unsqueeze(-1)).squeeze(-1)
            slope = (ga * step).sum(-1)
            # The Newton decrement −slope is below f's rounding: f can no longer tell steps apart.
            stalled = -slope <= 100 * torch.finfo(fa.dtype).eps * (1 + fa.abs())
            t = torch.ones_like(fa)
            for _ in range(60):
                x_try = xa + t.unsqueeze(-1) * step
                f_try, g_try = objective(x_try, ya)
                r_try = g_try.norm(dim=-1)
                # Armijo decrease, or (only once f stalls at rounding) a smaller residual: accepting
                # a smaller residual anywhere else can cycle between two points.
                ok = (f_try <= fa + 1e-4 * t * slope) | (stalled & (r_try < ra))
                if bool(ok.all()):
                    break
                t = torch.where(ok, t, 0.5 * t)
            keep = ok.unsqueeze(-1)
            x[active] = torch.where(keep, x_try, xa)
            f[active] = torch.where(ok, f_try, fa)
            g[active] = torch.where(keep, g_try, ga)
            residual[active] = torch.where(ok, r_try, ra)
        worst = residual.max().item() if residual.numel() else 0.0
        if worst > tol:
            raise RuntimeError(f"{name}: did not converge in max_iter={max_iter} Newton steps: largest residual "
                               f"‖∇ψ(x) − y‖ = {worst:.3g} > tol = {tol:g} ({int((residual > tol).sum())} of "
                               f"{residual.numel()} samples); raise max_iter or tol")
        return x.reshape(y.shape)
