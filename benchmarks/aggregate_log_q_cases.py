"""Benchmark cases for aggregate_log_q: sizes, implementations and the step each one runs."""

from __future__ import annotations

import math
from typing import Callable

import torch

import ivae_ext
from ivae_ext import reference

# (B, N, d): a large minibatch-KL / MI chunk, and a small training minibatch.
SIZES = [(1024, 1024, 32), (256, 256, 10)]
MODES = ["forward", "forward+backward"]
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def make_inputs(batch: int, comps: int, dim: int, requires_grad: bool, dtype=torch.float32, device="cpu"):
    """Codes z [B, d] and N Gaussian posteriors (loc, log-scale) [N, d], as a VAE's encoder gives."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(batch, dim, generator=gen, dtype=dtype)
    loc = torch.randn(comps, dim, generator=gen, dtype=dtype)
    log_scale = -1.0 + 0.3 * torch.randn(comps, dim, generator=gen, dtype=dtype)
    return [t.to(device).requires_grad_(requires_grad) for t in (z, loc, log_scale)]


def plain_gaussian_formula(z, loc, log_scale, family="gaussian"):
    """What a user writes without this package: the [B, N, d] Gaussian log-density, logsumexp."""
    pairwise = -0.5 * ((z[:, None, :] - loc[None]) / log_scale.exp()[None]) ** 2 - log_scale[None] - _HALF_LOG_2PI
    log_n = math.log(loc.shape[0])
    return torch.logsumexp(pairwise.sum(-1), dim=1) - log_n, torch.logsumexp(pairwise, dim=1) - log_n


def implementations() -> dict[str, Callable]:
    """name -> function (z, loc, log_scale, family) -> (log_qz, log_qz_marginals). The two compiled
    peers are what a user would reach for otherwise; the plain formula is the faster of the two."""
    return {
        "reference (eager)": reference.aggregate_log_q,
        "reference (compiled)": torch.compile(reference.aggregate_log_q),
        "plain formula (compiled)": torch.compile(plain_gaussian_formula),
        "fused": ivae_ext.ops.aggregate_log_q,
    }


def step(fn: Callable, inputs, mode: str, family: str = "gaussian") -> Callable[[], object]:
    """A zero-argument callable: both outputs, and for training the gradients of their sum."""
    if mode == "forward":

        def run():
            with torch.no_grad():
                return fn(*inputs, family)

        return run

    def run_with_backward():
        log_qz, log_qz_marginals = fn(*inputs, family)
        return torch.autograd.grad(log_qz.sum() + log_qz_marginals.sum(), inputs)

    return run_with_backward


# The least arithmetic per (pair, dimension) of any implementation of both outputs, in vector
# operations: forward — r = (z - μ)/σ, ℓ = c - r²/2, the joint's running sum, and the marginal's
# exp(ℓ - max) and sum (1 exp + 4 mul/add/FMA); backward — ℓ again, the marginal weight's exp,
# the coefficient, and the three gradient accumulations (1 exp + 8 mul/add/FMA).
MIN_OPS = {"forward": {"exp": 1, "fma": 4}, "forward+backward": {"exp": 2, "fma": 12}}
