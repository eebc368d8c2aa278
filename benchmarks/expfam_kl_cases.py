"""Benchmark cases for expfam_kl: sizes, implementations and the step each one runs."""

from __future__ import annotations

from typing import Callable

import torch

import ivae_ext
from ivae_ext import reference

# (B, d): a large batch of latent codes, and a typical small training minibatch.
SIZES = [(65536, 64), (256, 16)]
MODES = ["forward", "forward+backward"]


def make_inputs(batch: int, dim: int, requires_grad: bool, dtype=torch.float32):
    """q and a full [B, d] conditional prior p, as in iVAE's KL(q(z|x,u) || p(z|u))."""
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(batch, dim, generator=gen, dtype=dtype) * s for s in (1.0, 0.5, 1.0, 0.5)]
    return [t.requires_grad_(requires_grad) for t in tensors]


def implementations() -> dict[str, Callable]:
    """name -> KL function. 'reference (compiled)' is what a user would reach for otherwise."""
    return {
        "reference (eager)": reference.expfam_kl,
        "reference (compiled)": torch.compile(reference.expfam_kl),
        "fused": ivae_ext.ops.expfam_kl,
    }


def step(kl_fn: Callable, inputs, mode: str, family: str = "gaussian") -> Callable[[], object]:
    """A zero-argument callable running one forward (and backward) of the summed KL."""
    if mode == "forward":

        def run():
            with torch.no_grad():
                return kl_fn(*inputs, family, "sum")

        return run

    def run_with_backward():
        return torch.autograd.grad(kl_fn(*inputs, family, "sum").sum(), inputs)

    return run_with_backward


def bytes_moved(batch: int, dim: int, mode: str, itemsize: int = 4) -> int:
    """Bytes that must cross memory: forward reads 4 [B, d] inputs; backward reads them again
    (recomputing beats storing) and writes 4 [B, d] gradients."""
    grid = batch * dim * itemsize
    return 4 * grid if mode == "forward" else 12 * grid
