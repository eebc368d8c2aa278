"""Interleaved timing in one process: ratios of medians survive a noisy machine; absolute
times do not, so only ratios are reported."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict

import torch


def measure_copy_bandwidth(nbytes: int = 256 * 2**20, rounds: int = 15) -> float:
    """Bytes per second moved by a large tensor copy (read + write), median of `rounds`."""
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times)


def median_times(candidates: Dict[str, Callable[[], object]], rounds: int, warmup: int = 3) -> Dict[str, float]:
    """Median seconds per call of each candidate, measured round-robin so drifts hit all alike."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
