"""Shared test tables and helpers (the op x dtype x device grid and gradient collection)."""

from __future__ import annotations

import pytest
import torch

FAMILIES = ("gaussian", "laplace")
REDUCTIONS = ("sum", "none")
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


def kl_inputs(batch, dim, p_shape, dtype, device, seed=0):
    """(q_loc, q_log_scale, p_loc, p_log_scale), leaf tensors that require grad."""
    gen = torch.Generator().manual_seed(seed)

    def make(shape, scale):
        return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype=dtype, device=device).requires_grad_()

    return [make((batch, dim), 1.0), make((batch, dim), 0.5), make(p_shape, 1.0), make(p_shape, 0.5)]


def outputs_and_grads(fn, inputs, *args):
    """fn's output and the gradients of a random projection of it w.r.t. every input."""
    out = fn(*inputs, *args)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = (out * weights.to(out.dtype).to(out.device)).sum()
    grads = torch.autograd.grad(loss, inputs)
    return [out.detach(), *grads]


def icnn_inputs(batch, dim, hidden, layers, dtype=torch.float64, device="cpu", seed=0, alpha=0.3):
    """Leaf tensors (x, A, b, W, w, alpha) that require grad; W, w >= 0 as ivae_ext.nn.ICNN keeps them."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, positive=False):
        t = torch.rand(shape, generator=gen, dtype=torch.float64) if positive else torch.randn(shape, generator=gen, dtype=torch.float64)
        return (scale * t).to(dtype=dtype, device=device).requires_grad_()

    return [
        rand(batch, dim),
        rand(layers, hidden, dim, scale=dim**-0.5),
        rand(layers, hidden),
        rand(layers - 1, hidden, hidden, scale=2.0 / hidden, positive=True),
        rand(hidden, scale=2.0 / hidden, positive=True),
        torch.tensor(alpha, dtype=dtype, device=device, requires_grad=True),
    ]


def call_with_fake_tensors(op, tensors, *rest):
    """op(*tensors, *rest) on fake copies of the tensors: runs the op's fake kernel (the shape and
    argument checks torch.compile/export see) instead of the real one."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        return op(*[mode.from_tensor(t) for t in tensors], *rest)
