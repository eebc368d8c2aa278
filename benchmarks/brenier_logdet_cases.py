"""Benchmark cases for brenier_logdet: log det ∇²ψ(x) of an ICNN, forward alone and forward +
backward to every input (what a convex-potential flow's training step needs)."""

from __future__ import annotations

import os
from typing import Callable

import torch

import ivae_ext
from ivae_ext import reference

# Inputs: icnn_map_cases.make_inputs (the same ICNN parameters).
# (B, d, H, K): the main size, a wide-input one, and a tiny-d one (per-op overhead).
SIZES = [(1024, 16, 64, 4), (256, 64, 128, 4), (4096, 2, 32, 3)]


def fused_logdet(x, A, b, W, w, alpha):
    return ivae_ext.ops.brenier_logdet(x, A, b, W, w, alpha, check=False)


def forward_implementations() -> dict[str, Callable]:
    return {
        "vmap(hessian)+slogdet": reference.brenier_logdet,
        "brute force (d backward passes)": reference.brenier_logdet_bruteforce,
        "fused": fused_logdet,
    }


def backward_implementations() -> dict[str, Callable]:
    return {"autograd through vmap(hessian)+slogdet": reference.brenier_logdet, "fused": fused_logdet}


def forward_only(fn: Callable, inputs) -> Callable[[], object]:
    """log det for every sample, no gradient kept (parameters detached)."""
    detached = [t.detach() for t in inputs]

    def run():
        with torch.no_grad():
            return fn(*detached)

    return run


def forward_backward(fn: Callable, inputs) -> Callable[[], object]:
    """Mean log det and its gradient with respect to x and every parameter."""

    def run():
        return torch.autograd.grad(fn(*inputs).mean(), inputs)

    return run


def forward_flops(batch, dim, hidden, layers) -> float:
    """The closed form's work: 2B[(K-1)H²d + KHd²] for the Jacobian recurrence and the Hessian
    products, plus Bd³/3 for the Cholesky factorisations (the count of the issue)."""
    return 2.0 * batch * ((layers - 1) * hidden**2 * dim + layers * hidden * dim**2) + batch * dim**3 / 3.0


def with_env(values: dict, fn: Callable):
    """fn() with the environment variables `values` set, restored afterwards: the ops read
    IVAE_LOGDET_FORM and IVAE_ICNN_CPU_PATH per call, so candidates in one process can differ."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        return fn()
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
