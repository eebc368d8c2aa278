"""Prints one table of speed-up ratios (reference time / fused time), measured in one process.

Usage: python benchmarks/ratios.py [--rounds N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import expfam_kl_cases as kl  # noqa: E402
from timing import measure_copy_bandwidth, median_times  # noqa: E402


def expfam_kl_rows(rounds: int, bandwidth: float):
    impls = kl.implementations()
    for batch, dim in kl.SIZES:
        for mode in kl.MODES:
            inputs = kl.make_inputs(batch, dim, mode != "forward")
            times = median_times({name: kl.step(fn, inputs, mode) for name, fn in impls.items()}, rounds)
            floor = kl.bytes_moved(batch, dim, mode) / bandwidth
            yield {
                "op": "expfam_kl",
                "case": f"B={batch} d={dim}",
                "mode": mode,
                "eager / fused": times["reference (eager)"] / times["fused"],
                "compiled / fused": times["reference (compiled)"] / times["fused"],
                "fused / bandwidth floor": times["fused"] / floor,
            }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per implementation (median)")
    parser.add_argument("--out", help="also write the rows as JSON to this file (atomically)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads: {torch.get_num_threads()}; measuring copy bandwidth ...", flush=True)
    bandwidth = measure_copy_bandwidth()
    rows = []
    header = f"{'op':<10} {'case':<16} {'mode':<17} {'eager/fused':>12} {'compiled/fused':>15} {'fused/floor':>12}"
    print(header)
    print("-" * len(header))
    for row in expfam_kl_rows(args.rounds, bandwidth):
        rows.append(row)
        print(
            f"{row['op']:<10} {row['case']:<16} {row['mode']:<17} {row['eager / fused']:>11.2f}x "
            f"{row['compiled / fused']:>14.2f}x {row['fused / bandwidth floor']:>11.2f}x",
            flush=True,
        )
    print("ratios are medians of interleaved calls; fused/floor = fused time / (bytes that must move / copy bandwidth)")
    if args.out:
        directory = os.path.dirname(os.path.abspath(args.out))
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
            json.dump({"threads": torch.get_num_threads(), "copy_bandwidth_bytes_per_s": bandwidth, "rows": rows}, handle, indent=2)
        os.replace(handle.name, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
