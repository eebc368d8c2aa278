"""Benchmark cases for imq_mmd: sizes, implementations and the step each one runs."""

from __future__ import annotations

from typing import Callable

import torch

import ivae_ext
from ivae_ext import reference

# (B, D, per_dim): the decomposition VAE's step (B = 500 prior and posterior samples of D = 50
# latents, per dimension as the anchor), the same joint, and a small training batch.
SIZES = [(500, 50, True), (500, 50, False), (128, 10, True)]
MODES = ["forward", "forward+backward"]


def make_inputs(batch: int, dim: int, requires_grad: bool, dtype=torch.float32, device="cpu"):
    """x: B prior samples, y: B posterior samples. For training both require grad (a learned
    prior's rsample does): the most gradient work for every implementation."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, dim, generator=gen, dtype=dtype)
    y = 0.8 * torch.randn(batch, dim, generator=gen, dtype=dtype) + 0.1
    return [t.to(device).requires_grad_(requires_grad) for t in (x, y)]


def anchor_mmd_dim(x, y, scales=reference.IMQ_SCALES):
    """The per-dimension estimator the way the anchor's mmd_dim is written (equal sample sizes):
    one [B, B, D] squared-difference tensor per sample pair, then per scale the kernel tensors,
    the within-sample diagonals masked out, and the sums."""
    batch, dim = x.shape
    assert y.shape == x.shape, "the anchor's formula needs equal sample sizes"
    within_x = (x.unsqueeze(0) - x.unsqueeze(1)) ** 2
    within_y = (y.unsqueeze(0) - y.unsqueeze(1)) ** 2
    across = (x.unsqueeze(0) - y.unsqueeze(1)) ** 2
    mask = (1.0 - torch.eye(batch, dtype=x.dtype, device=x.device)).unsqueeze(-1)
    total = 0.0
    for c in scales:
        within = (mask * (c / (c + within_x) + c / (c + within_y))).sum((0, 1)) / (batch - 1)
        cross = (c / (c + across)).sum((0, 1)) * 2.0 / batch
        total = total + (within - cross).sum()
    return total / batch


def implementations(per_dim: bool) -> dict[str, Callable]:
    """name -> function (x, y) -> MMD². The compiled peers are what a user would reach for
    otherwise; the anchor's formula exists per dimension only."""
    impls = {
        "reference (eager)": lambda x, y: reference.imq_mmd(x, y, reference.IMQ_SCALES, per_dim),
        "reference (compiled)": torch.compile(lambda x, y: reference.imq_mmd(x, y, reference.IMQ_SCALES, per_dim)),
    }
    if per_dim:
        impls["anchor formula (compiled)"] = torch.compile(anchor_mmd_dim)
    impls["fused"] = lambda x, y: ivae_ext.ops.imq_mmd(x, y, reference.IMQ_SCALES, per_dim)
    return impls


def step(fn: Callable, inputs, mode: str) -> Callable[[], object]:
    """A zero-argument callable: the value, and for training the gradients that require it."""
    if mode == "forward":

        def run():
            with torch.no_grad():
                return fn(*inputs)

        return run

    wanted = [t for t in inputs if t.requires_grad]

    def run_with_backward():
        return torch.autograd.grad(fn(*inputs), wanted)

    return run_with_backward


def pair_dims(batch: int, dim: int, per_dim: bool) -> int:
    """Pairs the fused op visits (i < j within each sample, all across), times D per dimension."""
    pairs = batch * (batch - 1) + batch * batch
    return pairs * (dim if per_dim else 1)
