"""Convex-potential-flow training step: this package's exact log det (brenier_map_logdet) and
stochastic surrogate (brenier_map_surrogate) against a CP-Flow-style estimator, interleaved in
one process (issue 17).

    python benchmarks/flow_logdet_step.py [--threads 2] [--rounds 15] [--error-seeds 20] [--out F.json]

The step: y = ∇ψ(x), loss = mean(½‖y‖² − log det ∇²ψ(x)) (standard normal base), forward and
backward to x and every ICNN parameter (A, b, W, w, α as leaf tensors: a module's
reparametrisation costs the same in every candidate and is left out). Candidates:
- ``cpflow``: CP-Flow's training estimator written from its description
  (../shared/anchors/cp-flow.md): ∇ψ by autograd with create_graph, one Rademacher probe per
  sample, conjugate gradient (start u = v, at most d steps, atol 1e-3, stop when every entry of
  the whole batch has converged) whose Hessian-vector products are double backprop with
  create_graph=True (as its hvp_fun in training mode), a norm trace and a NaN check per product,
  then the surrogate vᵀH·stopgrad(u) with create_graph and a backward through it.
- ``cpflow_lean``: the same without the graph inside CG and without the trace/NaN check — what a
  careful user of the same method would write (reference.stochastic_logdet_surrogate).
- ``exact``: brenier_map_logdet (the Hessian, Cholesky, analytic backward).
- ``stochastic``: brenier_map_surrogate (same probe count and tolerance as cpflow).

Weights: x ~ N(0, I), A ~ N(0, 1/d) with its d columns scaled from 1 to √10 (log-spaced),
b ~ N(0, 1), W ~ U(0, 1/H), w ~ U(0, 1), and α found by bisection so that the MEDIAN condition
number of the batch's Hessians is 5 (float64 eigenvalues). Reports median-time ratios (baseline / ours) over --rounds interleaved
rounds, the CG iterations, and the gradient's error relative to the exact gradient (norm over all
parameters and x) of cpflow and stochastic with the same probes, averaged over --error-seeds.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_times  # noqa: E402

from ivae_ext import reference  # noqa: E402
from ivae_ext.experiments.common import write_json  # noqa: E402
from ivae_ext.ops import brenier_map_logdet  # noqa: E402
from ivae_ext.ops import logdet_surrogate  # noqa: E402

SIZES = [(1024, 16, 64, 4), (256, 64, 128, 4)]


def median_condition(x, A, b, W, w, alpha) -> float:
    hessian = reference.icnn_hessian(x, A, b, W, w, alpha)
    eig = torch.linalg.eigvalsh(0.5 * (hessian + hessian.transpose(1, 2)))
    return float((eig[:, -1] / eig[:, 0]).median())


def make_weights(batch, dim, hidden, layers, condition=5.0, seed=0, dtype=torch.float32):
    """(x, A, b, W, w, α) with the batch's median Hessian condition number = `condition`: the
    columns of A are scaled from 1 to √10 (an anisotropic curvature part M, whose own condition
    bounds what α can reach), then α is found by bisection in log space (H = αI + M)."""
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    x = torch.randn(batch, dim, generator=gen, dtype=f64)
    columns = torch.logspace(0, 0.5, dim, dtype=f64)
    A = torch.randn(layers, hidden, dim, generator=gen, dtype=f64) / math.sqrt(dim) * columns
    b = torch.randn(layers, hidden, generator=gen, dtype=f64)
    W = torch.rand(layers - 1, hidden, hidden, generator=gen, dtype=f64) / hidden
    w = torch.rand(hidden, generator=gen, dtype=f64)
    low, high = -8.0, 8.0  # log α
    for _ in range(50):
        mid = (low + high) / 2
        if median_condition(x, A, b, W, w, torch.tensor(math.exp(mid), dtype=f64)) > condition:
            low = mid
        else:
            high = mid
    alpha = torch.tensor(math.exp(high), dtype=f64)
    return [t.to(dtype) for t in (x, A, b, W, w, alpha)], median_condition(x, A, b, W, w, alpha)


def potential(x, A, b, W, w, alpha):
    """ψ as research code writes it (torch's softplus)."""
    z = torch.nn.functional.softplus(x @ A[0].T + b[0])
    for k in range(1, A.shape[0]):
        z = torch.nn.functional.softplus(z @ W[k - 1].T + x @ A[k].T + b[k])
    return z @ w + 0.5 * alpha * (x * x).sum(-1)


def cpflow_step(x, params, probes, tol, faithful=True):
    """Gradients of the CP-Flow-style loss (x and params), and the CG iterations."""
    x = x.detach().requires_grad_()
    trace = []
    psi = potential(x, *params)
    f = torch.autograd.grad(psi.sum(), x, create_graph=True)[0]

    def hvp(vector, create_graph=False):
        out = torch.autograd.grad(f, x, vector, create_graph=create_graph or faithful, retain_graph=True)[0]
        if faithful:
            trace.append((torch.norm(out) / torch.norm(vector)).detach().cpu())
            if not torch.isnan(vector).any() and torch.isnan(out).any():
                raise ArithmeticError("v has no nans but hvp has nans.")
        return out

    surrogate, most = 0, 0
    for v in probes:
        with torch.no_grad():
            u, iterations = reference.conjugate_gradient(hvp, v, tol, x.shape[1])
        surrogate = surrogate + (hvp(u, create_graph=True) * v).sum(-1)
        most = max(most, iterations)
    surrogate = surrogate / probes.shape[0]
    loss = (0.5 * (f * f).sum(-1) - surrogate).mean()
    return torch.autograd.grad(loss, [x, *params]), most


def exact_step(x, params):
    x = x.detach().requires_grad_()
    _, y, logdet = brenier_map_logdet(x, *params)
    loss = (0.5 * (y * y).sum(-1) - logdet).mean()
    return torch.autograd.grad(loss, [x, *params])


def stochastic_step(x, params, probes, tol):
    """brenier_map_surrogate with the given probes (the public function draws its own: the
    custom op underneath takes them, so both estimators see the same v)."""
    x = x.detach().requires_grad_()
    _, y, surrogate, iterations, _, _ = logdet_surrogate._brenier_surrogate(x, *params, probes, tol, x.shape[1])
    loss = (0.5 * (y * y).sum(-1) - surrogate).mean()
    return torch.autograd.grad(loss, [x, *params]), iterations


def relative_error(grads, exact):
    diff = torch.cat([(g - e).flatten() for g, e in zip(grads, exact)]).double()
    return float(diff.norm() / torch.cat([e.flatten() for e in exact]).double().norm())


def run_size(size, rounds, error_seeds, tol, probes_count):
    batch, dim, hidden, layers = size
    (x, *params), condition = make_weights(batch, dim, hidden, layers)
    params = [p.requires_grad_() for p in params]
    probes = logdet_surrogate.rademacher_probes(probes_count, batch, dim, x, torch.Generator().manual_seed(1))
    _, cp_iterations = cpflow_step(x, params, probes, tol)
    _, our_iterations = stochastic_step(x, params, probes, tol)
    candidates = {
        "cpflow": lambda: cpflow_step(x, params, probes, tol),
        "cpflow_lean": lambda: cpflow_step(x, params, probes, tol, faithful=False),
        "exact": lambda: exact_step(x, params),
        "stochastic": lambda: stochastic_step(x, params, probes, tol),
    }
    times = median_times(candidates, rounds)
    exact = exact_step(x, params)
    errors = {"cpflow": [], "stochastic": []}
    for seed in range(error_seeds):
        v = logdet_surrogate.rademacher_probes(probes_count, batch, dim, x, torch.Generator().manual_seed(100 + seed))
        errors["cpflow"].append(relative_error(cpflow_step(x, params, v, tol, faithful=False)[0], exact))
        errors["stochastic"].append(relative_error(stochastic_step(x, params, v, tol)[0], exact))
    return {
        "size": {"B": batch, "d": dim, "H": hidden, "K": layers},
        "median_condition": condition,
        "cg_iterations": {"cpflow_batch": cp_iterations, "ours_max": int(our_iterations.max()),
                          "ours_mean": float(our_iterations.float().mean())},
        "ratios": {f"{base}/{ours}": times[base] / times[ours]
                   for base in ("cpflow", "cpflow_lean") for ours in ("exact", "stochastic")},
        "gradient_relative_error": {k: statistics.mean(v) for k, v in errors.items()},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--error-seeds", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--probes", type=int, default=1)
    parser.add_argument("--sizes", default=None, help="B,d,H,K;B,d,H,K (default: the issue's two)")
    parser.add_argument("--out", default=None, help="write the results here (JSON, atomically)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = SIZES if args.sizes is None else [tuple(int(v) for v in s.split(",")) for s in args.sizes.split(";")]
    results = {"threads": args.threads, "rounds": args.rounds, "tol": args.tol, "probes": args.probes,
               "torch": torch.__version__, "sizes": []}
    for size in sizes:
        result = run_size(size, args.rounds, args.error_seeds, args.tol, args.probes)
        results["sizes"].append(result)
        r, it, err = result["ratios"], result["cg_iterations"], result["gradient_relative_error"]
        print(f"B={size[0]} d={size[1]} H={size[2]} K={size[3]} (median condition {result['median_condition']:.2f}): "
              f"cpflow/stochastic {r['cpflow/stochastic']:.2f}, cpflow/exact {r['cpflow/exact']:.2f}, "
              f"cpflow_lean/stochastic {r['cpflow_lean/stochastic']:.2f}, cpflow_lean/exact {r['cpflow_lean/exact']:.2f}; "
              f"CG iterations cpflow {it['cpflow_batch']}, ours max {it['ours_max']} mean {it['ours_mean']:.1f}; "
              f"gradient error cpflow {err['cpflow']:.3f}, stochastic {err['stochastic']:.3f}", flush=True)
    if args.out:
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
