"""Convex-potential flow: x ↦ y = ∇ψ_M ∘ … ∘ ∇ψ_1(x), a stack of Brenier maps of strongly convex
ICNNs, with the exact density log p(x) = log p_base(y | u) + Σ_m log det ∇²ψ_m (DESIGN.md op 3).

The base is N(0, I), or, with ``conditional_dim``, a factorized Gaussian whose mean and log-scale
are an MLP of an observed u: the identifiable-flow special case of the iVAE (a deterministic,
invertible decoder). Only the base sees u; the maps do not.
"""

from __future__ import annotations

import torch
from torch import nn

from ivae_ext.models.nets import MLP, log_density
from ivae_ext.nn import BrenierMap
from ivae_ext.nn.icnn import flatten_points
from ivae_ext.ops.logdet_surrogate import stochastic_is_cheaper

LOGDET_MODES = ("exact", "stochastic", "auto")


def _check_positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}")
    return value


class ConvexPotentialFlow(nn.Module):
    """Normalizing flow made of ``maps`` stacked Brenier maps ∇ψ_m (ICNNs of ``layers`` hidden
    layers of width ``hidden``), data x → base y.

    Args:
        dim: d, the data dimension.
        hidden, layers: width H and depth K of every ICNN ψ_m.
        maps: M, the number of stacked maps (one map already gives the optimal-transport map
            to the base; more make the flow more flexible for the same width).
        strong_convexity: α > 0 of every ψ_m, so each ∇ψ_m is a bijection; small α lets a map
            contract regions of low density (its Jacobian is ⪰ α I).
        learn_strong_convexity: learn each α (starting from ``strong_convexity``).
        conditional_dim: size of u; None for an unconditional flow with base N(0, I).
        base_hidden, base_layers: the MLP u ↦ (mean, log-scale) of the conditional base.
        logdet: how ``loss`` differentiates log det ∇²ψ_m while training (model.train() and grad
            enabled): "exact" (brenier_map_logdet: the Hessian and its Cholesky factor),
            "stochastic" (brenier_map_surrogate: CP-Flow's unbiased gradient estimate from
            ``probes`` Rademacher probes and conjugate gradient to ``cg_tol``; the loss value is
            then a surrogate, not the NLL) or "auto" (whichever the cost model of
            ``ivae_ext.ops.logdet_surrogate.stochastic_is_cheaper`` predicts faster on a CPU
            like this project's for (d, H, K), with min(d, 10) CG iterations expected; decided
            once, here, so that every step of a run — and every rank of a distributed one —
            logs the same terms). Evaluation (log_prob, forward, and loss in eval mode or
            without grad) is always exact.
        dtype, device: of the parameters.
    """

    def __init__(self, dim: int, hidden: int = 64, layers: int = 3, maps: int = 1,
                 strong_convexity: float = 0.1, learn_strong_convexity: bool = False,
                 conditional_dim: int | None = None, base_hidden: int = 32, base_layers: int = 2,
                 logdet: str = "exact", probes: int = 1, cg_tol: float = 1e-3, dtype=None, device=None):
        super().__init__()
        owner = type(self).__name__
        self.dim = _check_positive_int(owner, "dim", dim)
        _check_positive_int(owner, "maps", maps)
        if isinstance(strong_convexity, bool) or not isinstance(strong_convexity, (int, float)) or not strong_convexity > 0:
            raise ValueError(f"{owner}: strong_convexity must be a float > 0 (each ∇ψ must be invertible), "
                             f"got {strong_convexity!r}")
        if conditional_dim is not None:
            _check_positive_int(owner, "conditional_dim", conditional_dim)
        if logdet not in LOGDET_MODES:
            raise ValueError(f"{owner}: logdet must be one of {LOGDET_MODES}, got {logdet!r}")
        _check_positive_int(owner, "probes", probes)
        if isinstance(cg_tol, bool) or not isinstance(cg_tol, (int, float)) or not 0 < cg_tol < float("inf"):
            raise ValueError(f"{owner}: cg_tol must be a float > 0, got {cg_tol!r}")
        self.logdet, self.probes, self.cg_tol = logdet, probes, float(cg_tol)
        self.trains_with_surrogate = logdet == "stochastic" or (
            logdet == "auto" and stochastic_is_cheaper(dim, hidden, layers, min(dim, 10)))
        self.conditional_dim = conditional_dim
        self.maps = nn.ModuleList(
            BrenierMap(dim, hidden, layers, float(strong_convexity), learn_strong_convexity, dtype=dtype, device=device)
            for _ in range(maps)
        )
        if conditional_dim is None:
            self.base_net = None
        else:
            self.base_net = MLP(conditional_dim, 2 * dim, base_hidden, base_layers).to(dtype=dtype, device=device)
        self.config_ = {"dim": dim, "hidden": hidden, "layers": layers, "maps": maps,
                        "strong_convexity": float(strong_convexity), "learn_strong_convexity": learn_strong_convexity,
                        "conditional_dim": conditional_dim, "base_hidden": base_hidden, "base_layers": base_layers,
                        "logdet": logdet, "probes": probes, "cg_tol": float(cg_tol)}

    def config(self) -> dict:
        return dict(self.config_)

    def _parameter(self) -> torch.Tensor:
        return self.maps[0].potential.A

    def _check_u(self, u, batch_shape: torch.Size, name: str) -> torch.Tensor | None:
        """u as [B, conditional_dim] matching x's batch shape (or None), else a clear error."""
        owner = f"{type(self).__name__}.{name}"
        if self.conditional_dim is None:
            if u is not None:
                raise ValueError(f"{owner}: u was given but this flow is unconditional (conditional_dim=None); "
                                 f"build it with conditional_dim=u.shape[-1] to condition the base on u")
            return None
        if u is None:
            raise ValueError(f"{owner}: u is required: this flow's base is conditioned on u "
                             f"(conditional_dim={self.conditional_dim})")
        flat = flatten_points(u, self.conditional_dim, owner, "u")
        if tuple(u.shape[:-1]) != tuple(batch_shape):
            raise ValueError(f"{owner}: u must have shape {[*batch_shape, self.conditional_dim]} (x's batch shape "
                             f"{list(batch_shape)} + [conditional_dim]), got {list(u.shape)}")
        return flat

    def base_params(self, u: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-scale of the base, each [n, d] (zeros without u)."""
        if u is None:
            zeros = self._parameter().new_zeros(n, self.dim)
            return zeros, zeros
        loc, log_scale = self.base_net(u).chunk(2, dim=-1)
        return loc, log_scale

    def forward(self, x):
        """(y [..., d], Σ_m log det ∇²ψ_m [...]) for x [..., d]: the data pushed to the base. Given a
        batch dict instead, its loss(batch) dict, as every model's forward (DistributedDataParallel
        calls forward)."""
        if isinstance(x, dict):
            return self.loss(x)
        y = flatten_points(x, self.dim, f"{type(self).__name__}.forward")
        total = y.new_zeros(y.shape[0])
        for brenier in self.maps:
            y, logdet = brenier.forward_with_logdet(y)
            total = total + logdet
        return y.reshape(x.shape), total.reshape(x.shape[:-1])

    def _log_prob_terms(self, x: torch.Tensor, u, name: str):
        """(log p_base(y | u) [B], Σ logdet [B]) for x flattened to [B, d]."""
        flat = flatten_points(x, self.dim, f"{type(self).__name__}.{name}")
        flat_u = self._check_u(u, x.shape[:-1], name)
        y, logdet = self.forward(flat)
        loc, log_scale = self.base_params(flat_u, flat.shape[0])
        return log_density(y, loc, log_scale, "gaussian").sum(-1), logdet

    def log_prob(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | u) [...] for x [..., d] (u [..., conditional_dim] for a conditional flow)."""
        log_base, logdet = self._log_prob_terms(x, u, "log_prob")
        return (log_base + logdet).reshape(x.shape[:-1])

    def uses_surrogate(self) -> bool:
        """Whether ``loss`` trains through the stochastic surrogate now (training mode, grad on)."""
        return self.trains_with_surrogate and self.training and torch.is_grad_enabled()

    def _surrogate_terms(self, x: torch.Tensor, u):
        """(log p_base(y | u) [B], Σ_m surrogate_m [B], mean CG iterations) for x [B, d]."""
        flat = flatten_points(x, self.dim, f"{type(self).__name__}.loss")
        flat_u = self._check_u(u, x.shape[:-1], "loss")
        y, total, iterations = flat, flat.new_zeros(flat.shape[0]), []
        for brenier in self.maps:
            y, surrogate, counts = brenier.forward_with_surrogate(y, self.probes, self.cg_tol)
            total = total + surrogate
            iterations.append(counts.float().mean())
        loc, log_scale = self.base_params(flat_u, flat.shape[0])
        mean_iterations = float(torch.stack(iterations).mean()) if iterations else 0.0
        return log_density(y, loc, log_scale, "gaussian").sum(-1), total, mean_iterations

    def loss(self, batch: dict) -> dict:
        """Mean negative log-likelihood of batch["x"] (given batch["u"] if conditional), with its
        two parts: the base log-density of y and the log-Jacobian-determinant. When training
        through the stochastic surrogate (``logdet``), "loss" is −mean(log p_base + Σ surrogate)
        — its gradient is the NLL's in expectation, its value is not the NLL — with the terms
        "log_base", "logdet_surrogate" and "cg_iterations" (no "nll", which would need the exact
        log det)."""
        x = batch["x"]
        if self.uses_surrogate():
            log_base, surrogate, iterations = self._surrogate_terms(x, batch.get("u"))
            loss = -(log_base + surrogate).mean()
            return {"loss": loss, "log_base": log_base.mean().detach(), "logdet_surrogate": surrogate.mean().detach(),
                    "cg_iterations": torch.tensor(iterations)}
        log_base, logdet = self._log_prob_terms(x, batch.get("u"), "loss")
        nll = -(log_base + logdet).mean()
        return {"loss": nll, "nll": nll.detach(), "log_base": log_base.mean().detach(), "logdet": logdet.mean().detach()}

    @torch.no_grad()
    def inverse(self, y: torch.Tensor, tol: float | None = None, max_iter: int = 100) -> torch.Tensor:
        """x with forward(x)[0] = y, for y [..., d]: each map inverted by damped Newton, last map first.
        tol is the absolute residual per map (default 1e-5 in float32, 1e-9 in float64)."""
        if tol is None:
            tol = 1e-9 if self._parameter().dtype == torch.float64 else 1e-5
        x = flatten_points(y, self.dim, f"{type(self).__name__}.inverse", "y")
        for brenier in reversed(self.maps):
            x = brenier.inverse(x, tol=tol, max_iter=max_iter)
        return x.reshape(y.shape)

    @torch.no_grad()
    def sample(self, n: int, u: torch.Tensor | None = None, tol: float | None = None, max_iter: int = 100) -> torch.Tensor:
        """n draws x [n, d]: y from the base (given u [n, conditional_dim], or one u [conditional_dim]
        shared by all draws), then the inverse maps. Uses torch's global RNG."""
        owner = f"{type(self).__name__}.sample"
        _check_positive_int(owner, "n", n)
        if u is not None and isinstance(u, torch.Tensor) and u.dim() == 1:
            u = u.expand(n, -1)
        flat_u = self._check_u(u, torch.Size([n]), "sample")
        loc, log_scale = self.base_params(flat_u, n)
        y = loc + torch.exp(log_scale) * torch.randn_like(loc)
        return self.inverse(y, tol=tol, max_iter=max_iter)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, maps={len(self.maps)}, conditional_dim={self.conditional_dim}"
