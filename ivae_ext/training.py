"""``fit``: the training loop every model shares (Adam, LR schedule, clipping, checkpoints, resume).

Exact resume: a checkpoint holds the model, optimizer and scheduler states, the epoch, the
shuffling generator and torch's global RNG (the models draw their noise from it), so resuming
from the checkpoint of epoch k reproduces, bit for bit, an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ivae_ext import distributed
from ivae_ext.distributed import is_main_process
from ivae_ext.noise import batch_noise, step_seed

SCHEDULES = ("plateau", "cosine", "none")


class NaNLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def _as_tensor(a, dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file in the same directory, then os.replace: never a torn file.
    In a distributed run only rank 0 writes."""
    if not is_main_process():
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _make_scheduler(optimizer, schedule: str, epochs: int):
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=0)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if schedule == "none":
        return None
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


@torch.no_grad()
def evaluate_loss(model, x, u=None, batch_size: int = 256, seed: int = 0) -> dict:
    """Mean of every loss term over the data in fixed order (a fixed seed for the sampling noise)."""
    dtype = next(model.parameters()).dtype
    x = _as_tensor(x, dtype)
    u = None if u is None else _as_tensor(u, dtype)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        totals: dict[str, float] = {}
        for start in range(0, len(x), batch_size):
            batch = {"x": x[start:start + batch_size]}
            if u is not None:
                batch["u"] = u[start:start + batch_size]
            terms = model.loss(batch)
            n = len(batch["x"])
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v) * n
    finally:
        torch.random.set_rng_state(state)
    return {k: v / len(x) for k, v in totals.items()}


@dataclass
class EarlyStopping:
    """Model selection and early stopping on a validation loss (lower is better).

    ``update(epoch, value)`` returns (is_best, stop): is_best when value is the lowest so far (the
    epoch to select); stop once ``patience`` epochs have passed since the last value that beat the
    one before it by more than ``min_improvement`` (so a slow drift of tiny gains, noise on a
    converged model, does not keep training alive; such a gain can still be the selected epoch).
    patience 0 never stops. A plain dataclass so that it goes into a checkpoint as is."""

    patience: int
    min_improvement: float = 0.0
    best_epoch: int | None = None
    best_value: float = math.inf
    progress_epoch: int = 0
    progress_value: float = math.inf

    def update(self, epoch: int, value: float) -> tuple[bool, bool]:
        is_best = value < self.best_value
        if is_best:
            self.best_epoch, self.best_value = epoch, value
        if value < self.progress_value - self.min_improvement:
            self.progress_epoch, self.progress_value = epoch, value
            return is_best, False
        return is_best, bool(self.patience) and epoch - self.progress_epoch >= self.patience


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """The Adam every training run uses: fused (one kernel for all parameters) where torch has it;
    the per-parameter loop is a third of a small model's step time on the CPU."""
    params = list(model.parameters())
    fused = all(p.dtype in (torch.float32, torch.float64) and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused)


def backward_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                      clip_grad: float | None) -> None:
    """One optimisation step on ``loss``: gradients, optional clipping of their global norm, Adam."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()


def _global_means(terms: dict, rows: int, global_rows: int, ctx) -> dict:
    """Each loss term's mean over the global batch (the all-reduced, row-weighted rank means)."""
    values = torch.stack([v.detach().reshape(()).to(torch.float64).cpu() for v in terms.values()])
    if ctx.active:
        values = values * rows
        if ctx.backend == "nccl":
            values = values.cuda()
        torch.distributed.all_reduce(values)
        values = values.cpu() / global_rows
    return dict(zip(terms.keys(), values.tolist()))


def fit(
    model: torch.nn.Module,
    x,
    u=None,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-2,
    schedule: str = "plateau",
    clip_grad: float | None = 10.0,
    seed: int = 0,
    checkpoint: str | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, torch.nn.Module, dict], None] | None = None,
    max_epochs_this_call: int | None = None,
    checkpoint_every: int = 1,
    split_invariant_noise: bool | None = None,
) -> dict:
    """Train ``model`` on x (and u) by minimising ``model.loss(batch)["loss"]`` with Adam.

    The model's parameters are (re)initialised from ``seed`` only by the caller; fit seeds the
    shuffling and the sampling noise. Every epoch it records the mean of each loss term in
    ``history["epochs"]``; ``on_epoch_end(epoch, model, record)`` may add entries (e.g. an MCC);
    if it returns True it has changed the parameters, and Adam's moment estimates are reset; if it
    sets ``record["stop"] = True`` training ends after this epoch (early stopping; the checkpoint
    remembers it, so resuming a stopped run trains no further).
    With ``checkpoint`` set, the state is written atomically after every epoch; ``resume=True``
    continues from it exactly. ``checkpoint_every``: write it every this many epochs (and at the
    last epoch and at a stop); resuming from an older checkpoint redoes the epochs since, with
    the same result, so this trades disk writes for recomputation after a crash.
    ``split_invariant_noise``: draw each step's sampling noise for the whole global batch from a
    generator seeded by (seed, epoch, step) (``ivae_ext.noise``) instead of torch's global RNG; on
    by default in a distributed run, off otherwise (so single-process results stay those of the
    global RNG); True makes a single-process run follow a distributed one with the same global batch.
    ``max_epochs_this_call`` stops early (to test resuming).
    Raises NaNLossError if the loss stops being finite. Returns the history.

    Data-parallel (``ivae_ext.distributed``): under torchrun (or after ``distributed.setup``)
    every rank passes the same x, u and seed; each takes every world_size-th row of each global
    batch of ``batch_size`` rows (so batch_size must be a multiple of the world size), the model
    is wrapped in DistributedDataParallel (it calls the model's ``forward(batch)``, which returns
    ``loss(batch)``), each rank's loss is weighted by its share of the rows so that the averaged
    gradient is the global batch's, the logged terms are all-reduced, and only rank 0 writes the
    checkpoint (with every rank's RNG state) or shows a progress bar. The sampling noise of a step
    is drawn for the whole global batch (``ivae_ext.noise``), so the run follows a single-process
    run with the same global batch, seed and ``split_invariant_noise=True`` to the rounding of the
    all-reduce. A last global batch
    with fewer rows than ranks is skipped (at most world_size − 1 rows an epoch). Objectives that
    are not means over points (minibatch estimates of q(z): DecompVAE's D, the iVAE's weighted
    objective, batch norm) are estimated on each rank's share instead.
    """
    dtype = next(model.parameters()).dtype
    x = _as_tensor(x, dtype)
    u = None if u is None else _as_tensor(u, dtype)
    if u is not None and len(u) != len(x):
        raise ValueError(f"x and u must have the same number of rows, got {len(x)} and {len(u)}")
    if len(x) == 0:
        raise ValueError("x is empty")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
    if hasattr(model, "dataset_size"):
        model.dataset_size = len(x)
    ctx = distributed.setup(next(model.parameters()).device)
    if ctx.active and batch_size % ctx.world_size:
        raise ValueError(f"batch_size (the global batch) must be a multiple of the world size {ctx.world_size}, "
                         f"got {batch_size}")
    shared_noise = ctx.active if split_invariant_noise is None else bool(split_invariant_noise)
    step_model = model
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model)  # broadcasts rank 0's parameters
    optimizer = make_optimizer(model, lr)
    scheduler = _make_scheduler(optimizer, schedule, epochs)
    shuffle = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    history = {"epochs": [], "wall_time": 0.0}
    start_epoch = 0
    if resume:
        if checkpoint is None or not os.path.exists(checkpoint):
            raise FileNotFoundError(f"resume=True but no checkpoint at {checkpoint!r}")
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        shuffle.set_state(state["shuffle_rng"])
        rng_states = state.get("torch_rng_per_rank", [state["torch_rng"]])
        if len(rng_states) != ctx.world_size:
            raise ValueError(f"the checkpoint {checkpoint!r} was written by a run of {len(rng_states)} process(es); "
                             f"resume it with that many, not {ctx.world_size}")
        torch.random.set_rng_state(rng_states[ctx.rank])
        history = state["history"]
        start_epoch = state["epoch"]
        if history["epochs"] and history["epochs"][-1].get("stop"):
            model.eval()
            return history  # the run stopped early: resuming it trains no further
    n_batches = math.ceil(len(x) / batch_size)
    stop = epochs if max_epochs_this_call is None else min(epochs, start_epoch + max_epochs_this_call)
    bar = tqdm(total=(stop - start_epoch) * n_batches, disable=not (progress and ctx.rank == 0), desc="fit",
               leave=False)
    model.train()
    for epoch in range(start_epoch, stop):
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=shuffle)
        sums: dict[str, float] = {}
        steps = 0
        for i in range(n_batches):
            global_idx = order[i * batch_size:(i + 1) * batch_size]
            if len(global_idx) < ctx.world_size:
                continue  # too few rows to give every rank one
            rows = slice(ctx.rank, None, ctx.world_size)
            idx = global_idx[rows]
            batch = {"x": x[idx]}
            if u is not None:
                batch["u"] = u[idx]
            with batch_noise(step_seed(seed, epoch, i), len(global_idx), rows) if shared_noise else nullcontext():
                terms = step_model(batch) if ctx.active else model.loss(batch)
            loss = terms["loss"]
            logged = _global_means(terms, len(idx), len(global_idx), ctx)
            if not math.isfinite(logged["loss"]):
                bar.close()
                detail = ", ".join(f"{k}={v:.4g}" for k, v in logged.items())
                raise NaNLossError(
                    f"loss is {logged['loss']} at epoch {epoch + 1}, batch {i + 1}/{n_batches} ({detail}); "
                    f"lower the learning rate (now {optimizer.param_groups[0]['lr']:.3g}) or set gradient clipping"
                )
            if ctx.active:  # DDP averages over ranks: weight by this rank's share of the rows
                loss = loss * (len(idx) * ctx.world_size / len(global_idx))
            backward_and_step(model, optimizer, loss, clip_grad)
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{logged['loss']:.4g}")
        record = {k: v / max(steps, 1) for k, v in sums.items()}
        record["epoch"] = epoch + 1
        record["lr"] = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(record["loss"])
            else:
                scheduler.step()
        history["wall_time"] += time.perf_counter() - t0
        if on_epoch_end is not None and on_epoch_end(epoch + 1, model, record):
            optimizer.state.clear()  # the hook moved the parameters: stale moments would misdirect the steps
        history["epochs"].append(record)
        due = (epoch + 1) % checkpoint_every == 0 or epoch + 1 == stop or record.get("stop")
        if checkpoint is not None and due:
            rng_states = [torch.random.get_rng_state()]
            if ctx.active:
                gathered = [None] * ctx.world_size
                torch.distributed.all_gather_object(gathered, rng_states[0])
                rng_states = gathered
            save_atomic(  # rank 0 only
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "shuffle_rng": shuffle.get_state(),
                    "torch_rng": rng_states[0],
                    "torch_rng_per_rank": rng_states,
                    "history": history,
                    "epoch": epoch + 1,
                },
                checkpoint,
            )
        if record.get("stop"):
            break
    bar.close()
    model.eval()
    return history
