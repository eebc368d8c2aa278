"""Benchmark cases for expfam_kl: sizes, implementations and the step each one runs."""

from __future__ import annotations

from typing import Callable

import torch

import ivae_ext
from ivae_ext import reference

# (B, d): a large batch of latent codes, and a typical small training minibatch.
SIZES = [(65536, 64), (256, 16)]
MODES = ["forward", "forward+backward"]


def make_inputs(batch: int, dim: int, requires_grad: bool, dtype=torch.float32, device="cpu"):
    """q and a full [B, d] conditional prior p, as in iVAE's KL(q(z|x,u) || p(z|u))."""
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(batch, dim, generator=gen, dtype=dtype) * s for s in (1.0, 0.5, 1.0, 0.5)]
    return [t.to(device).requires_grad_(requires_grad) for t in tensors]


def textbook_kl(q_loc, q_log_scale, p_loc, p_log_scale, family="gaussian", reduction="sum"):
    """The closed forms as a user would type them from a textbook (plain exp, no expm1), which
    inductor fuses and vectorises; the reference's stable expm1 forms it does not vectorise.
    Gaussian: ½[2(ℓp − ℓq) + (σq² + Δ²)/σp² − 1]; Laplace: log(bp/bq) + |Δ|/bp + (bq/bp)e^(−|Δ|/bq) − 1."""
    if family == "gaussian":
        kl = 0.5 * (2 * (p_log_scale - q_log_scale) + (torch.exp(2 * q_log_scale) + (q_loc - p_loc) ** 2) / torch.exp(2 * p_log_scale) - 1)
    elif family == "laplace":
        q_scale, p_scale, distance = torch.exp(q_log_scale), torch.exp(p_log_scale), (q_loc - p_loc).abs()
        kl = (p_log_scale - q_log_scale) + distance / p_scale + q_scale / p_scale * torch.exp(-distance / q_scale) - 1
    else:
        raise ValueError(f"family must be 'gaussian' or 'laplace', got {family!r}")
    return kl.sum(-1) if reduction == "sum" else kl


def implementations() -> dict[str, Callable]:
    """name -> KL function. The two compiled peers are what a user would reach for otherwise: the
    reference (expm1 forms) and the textbook formula, the faster of the two under torch.compile."""
    return {
        "reference (eager)": reference.expfam_kl,
        "reference (compiled)": torch.compile(reference.expfam_kl),
        "textbook formula (compiled)": torch.compile(textbook_kl),
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
