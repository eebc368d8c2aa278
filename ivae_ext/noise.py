"""The models' sampling noise, drawn so that it does not depend on how a batch is split.

Outside a training step the draws come from torch's global RNG (``torch.randn_like``). Inside
``batch_noise(seed, global_rows, rows)`` — which ``ivae_ext.fit`` opens around every step — a draw
shaped like a batch [n, ...] is made for the whole global batch [global_rows, ...] from a generator
seeded by the step, and the rows this process holds are returned. So every sample of a global
batch gets the same noise whether one process trains on it or several ranks share it, and a
data-parallel run follows the single-process run with the same global batch (to the rounding of
the gradient all-reduce). A draw whose leading size is not the batch's (e.g. several samples per
point) falls back to the global RNG: still correct, but then not split-invariant.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

__all__ = ["batch_noise", "normal_like", "uniform_like", "step_seed"]

_local = threading.local()


def step_seed(*keys: int) -> int:
    """A 63-bit seed from integers (e.g. run seed, epoch, step): hash() of an int tuple is the same
    in every process (PYTHONHASHSEED only salts str and bytes)."""
    return hash(tuple(int(k) for k in keys)) & ((1 << 63) - 1)


class _BatchNoise:
    def __init__(self, seed: int, global_rows: int, rows):
        self.seed, self.global_rows, self.rows = seed, global_rows, rows
        self.n_rows = len(range(global_rows)[rows])
        self.generators: dict = {}

    def draw(self, kind: str, like: torch.Tensor) -> torch.Tensor | None:
        if like.dim() == 0 or like.shape[0] != self.n_rows:
            return None
        gen = self.generators.get(like.device)
        if gen is None:
            gen = self.generators[like.device] = torch.Generator(device=like.device).manual_seed(self.seed)
        shape = (self.global_rows, *like.shape[1:])
        fn = torch.randn if kind == "normal" else torch.rand
        return fn(shape, generator=gen, dtype=like.dtype, device=like.device)[self.rows]


@contextmanager
def batch_noise(seed: int, global_rows: int, rows=slice(None)):
    """Draws shaped like a batch of ``len(range(global_rows)[rows])`` rows come from the rows
    ``rows`` of a draw for all ``global_rows`` rows, from a generator seeded with ``seed``."""
    previous = getattr(_local, "noise", None)
    _local.noise = _BatchNoise(seed, global_rows, rows)
    try:
        yield
    finally:
        _local.noise = previous


def _draw(kind: str, like: torch.Tensor) -> torch.Tensor:
    noise = getattr(_local, "noise", None)
    out = None if noise is None else noise.draw(kind, like)
    if out is None:
        out = torch.randn_like(like) if kind == "normal" else torch.rand_like(like)
    return out


def normal_like(like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws shaped like ``like`` (see the module docstring for where they come from)."""
    return _draw("normal", like)


def uniform_like(like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) draws shaped like ``like``."""
    return _draw("uniform", like)
