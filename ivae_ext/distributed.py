"""Data-parallel training on torch.distributed: process group, ranks, and a clean exit.

A run launched by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT) is detected from the environment; ``ivae_ext.fit`` then joins the process group
(NCCL for a model on a CUDA device, Gloo on the CPU), each rank trains on its share of every
global batch, DistributedDataParallel averages the gradients, and only rank 0 writes files
(``ivae_ext.experiments.common`` and ``ivae_ext.training`` ask ``is_main_process``).

Exit: with torch 2.14.1 a 2-rank Gloo run on the CPU aborts at interpreter exit ("terminate called
without an active exception", SIGABRT) in about one run in five, after all its work is done, with
or without ivae_ext: Gloo's worker threads are torn down during interpreter finalisation. A barrier
before ``destroy_process_group``, or skipping it, does not help. ``finish(status)`` therefore ends
the process with ``os._exit`` once every file is written and the output streams are flushed, so
finalisation never runs; a failed run still exits non-zero. The command line calls it for you;
call it yourself at the end of a script that trains under torchrun.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Context", "context", "env_world_size", "finish", "is_main_process", "run_info", "setup"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank, world size, local rank and backend ("none" alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def active(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def context() -> Context:
    """The current process group's view (world size 1, backend "none" when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                       str(dist.get_backend()))
    return Context()


def is_main_process() -> bool:
    """True on rank 0, and when not distributed: the one process that writes files."""
    return context().rank == 0


def run_info() -> dict:
    """What metrics.json records about the run's processes."""
    ctx = context()
    return {"world_size": ctx.world_size, "backend": ctx.backend}


def setup(device: torch.device | str = "cpu", required: bool = False) -> Context:
    """Join the process group torchrun describes (if not already in it) and return the context.

    Without a torchrun environment (WORLD_SIZE unset or 1) this is a no-op returning world size 1,
    unless ``required``, which raises: ``--distributed`` asks for a run that cannot happen alone.
    Backend: NCCL when ``device`` is CUDA (each rank on cuda:LOCAL_RANK), Gloo otherwise.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    world = env_world_size()
    if world <= 1:
        if required:
            missing = [k for k in _ENV if k not in os.environ]
            raise RuntimeError("distributed training was requested (--distributed) but this process was not started "
                               "by torchrun with more than one process (WORLD_SIZE="
                               f"{os.environ.get('WORLD_SIZE', 'unset')}; missing: {', '.join(missing) or 'none'}): "
                               "launch it with  torchrun --nproc_per_node=N -m ivae_ext train …")
        return Context()
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but the torchrun environment lacks {', '.join(missing)}: launch "
                           "with torchrun (it sets them all)")
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend, init_method="env://")
    return context()


def finish(status: int = 0):
    """End this process with ``status`` without interpreter finalisation (see the module
    docstring): flush the output streams, leave the process group, then ``os._exit``. Call it
    only when every file the run writes is written (ivae_ext's writers are atomic and fsync'd)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the exit status must survive a teardown error
            pass
    os._exit(status)
