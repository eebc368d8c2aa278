"""Interleaved timing in one process: ratios of medians survive a noisy machine; absolute
times do not, so only ratios are reported. On a GPU every timed call ends with a device
synchronisation, so a timing covers the kernels, not just their launch."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional

import torch


def synchronizer(device="cpu") -> Callable[[], None]:
    """What to call before reading the clock: nothing on the CPU, a device sync on CUDA."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def measure_copy_bandwidth(nbytes: int = 256 * 2**20, rounds: int = 15, device="cpu") -> float:
    """Bytes per second moved by a large tensor copy (read + write), median of `rounds`."""
    sync = synchronizer(device)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        dst.copy_(src)
        sync()
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times)


def median_times(
    candidates: Dict[str, Callable[[], object]], rounds: int, warmup: int = 3, sync: Optional[Callable[[], None]] = None
) -> Dict[str, float]:
    """Median seconds per call of each candidate, measured round-robin so drifts hit all alike.
    `sync` (e.g. torch.cuda.synchronize) runs before the clock starts and before it stops."""
    sync = sync or (lambda: None)
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
