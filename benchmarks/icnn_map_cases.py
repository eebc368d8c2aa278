"""Benchmark cases for icnn_map: a training step through a Brenier map, loss = f(∇ψ(x))."""

from __future__ import annotations

from typing import Callable

import torch

import ivae_ext
from ivae_ext import reference

# (B, d, H, K): a small map (per-op overhead dominates) and a large one (GEMMs dominate).
SIZES = [(1024, 8, 64, 3), (4096, 64, 256, 4)]


def make_inputs(batch, dim, hidden, layers, dtype=torch.float32, device="cpu"):
    """x and ICNN parameters (W, w >= 0), all requiring grad as in training."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, dim, generator=gen, dtype=dtype)
    A = torch.randn(layers, hidden, dim, generator=gen, dtype=dtype) / dim**0.5
    b = torch.randn(layers, hidden, generator=gen, dtype=dtype)
    W = torch.rand(layers - 1, hidden, hidden, generator=gen, dtype=dtype) * (2.0 / hidden)
    w = torch.rand(hidden, generator=gen, dtype=dtype) * (2.0 / hidden)
    alpha = torch.tensor(0.5, dtype=dtype)
    return [t.to(device).requires_grad_() for t in (x, A, b, W, w, alpha)]


def implementations() -> dict[str, Callable]:
    return {"reference (double backprop)": reference.icnn_map, "fused": ivae_ext.ops.icnn_map}


def training_step(map_fn: Callable, inputs) -> Callable[[], object]:
    """One forward + backward of a transport-style loss through ∇ψ, to every input."""
    target = torch.zeros_like(inputs[0])

    def run():
        _, grad = map_fn(*inputs)
        loss = ((grad - target) ** 2).sum(-1).mean()
        return torch.autograd.grad(loss, inputs)

    return run


def fused_step_flops(batch, dim, hidden, layers) -> float:
    """GEMM FLOPs of the fused forward + backward: 2B[6 d K H + 6 (K-1) H²] (ops/icnn_map.cpp:
    input-sized GEMMs x A_kᵀ, ∇ψ, ḡ A_kᵀ, x̄ and Ā over 2B rows; per hidden layer z W_kᵀ,
    g_k W_k, the tangent, W̄_k over 2B rows and z̄)."""
    return 2.0 * batch * (6 * dim * layers * hidden + 6 * (layers - 1) * hidden * hidden)


def gemm_rate(size: int = 1024, rounds: int = 20, device="cpu") -> float:
    """This machine's single-precision GEMM rate (FLOP/s): the best of `rounds` 1024³ products, a
    peak to compare against (a median moved by a third between runs on this shared machine)."""
    import time

    from timing import synchronizer

    sync = synchronizer(device)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best
