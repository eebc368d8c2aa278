"""Prints one table of speed-up ratios (reference time / fused time), measured in one process.

Usage: python benchmarks/ratios.py [--rounds N] [--out FILE.json] [--only OP] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aggregate_log_q_cases as agg  # noqa: E402
import expfam_kl_cases as kl  # noqa: E402
import brenier_logdet_cases as logdet  # noqa: E402
import icnn_map_cases as icnn  # noqa: E402
import imq_mmd_cases as mmd  # noqa: E402
from timing import measure_copy_bandwidth, median_times, synchronizer  # noqa: E402


def expfam_kl_rows(rounds: int, bandwidth: float, device="cpu"):
    impls = kl.implementations()
    sync = synchronizer(device)
    for batch, dim in kl.SIZES:
        for mode in kl.MODES:
            inputs = kl.make_inputs(batch, dim, mode != "forward", device=device)
            times = median_times({name: kl.step(fn, inputs, mode) for name, fn in impls.items()}, rounds, sync=sync)
            floor = kl.bytes_moved(batch, dim, mode) / bandwidth
            yield {
                "op": "expfam_kl",
                "case": f"B={batch} d={dim}",
                "mode": mode,
                "eager / fused": times["reference (eager)"] / times["fused"],
                "compiled reference / fused": times["reference (compiled)"] / times["fused"],
                "compiled textbook / fused": times["textbook formula (compiled)"] / times["fused"],
                "fused / bandwidth floor": times["fused"] / floor,
            }


def icnn_map_rows(rounds: int, gemm_flops_per_s: float, device="cpu"):
    impls = icnn.implementations()
    sync = synchronizer(device)
    for size in icnn.SIZES:
        inputs = icnn.make_inputs(*size, device=device)
        times = median_times({name: icnn.training_step(fn, inputs) for name, fn in impls.items()}, rounds, sync=sync)
        achieved = icnn.fused_step_flops(*size) / times["fused"]
        yield {
            "op": "icnn_map",
            "case": "B={} d={} H={} K={}".format(*size),
            "mode": "forward+backward",
            "reference / fused": times["reference (double backprop)"] / times["fused"],
            "fused GFLOP/s": achieved / 1e9,
            "fused / GEMM rate": achieved / gemm_flops_per_s,
        }


def brenier_logdet_rows(rounds: int, gemm_flops_per_s: float, device="cpu"):
    sync = synchronizer(device)
    for size in logdet.SIZES:
        inputs = icnn.make_inputs(*size, device=device)
        forward = logdet.forward_implementations()
        if size[1] <= 2:  # tiny d: the brute force is just d backward passes, not a separate case
            forward.pop("brute force (d backward passes)")
        times = median_times({name: logdet.forward_only(fn, inputs) for name, fn in forward.items()}, rounds, warmup=1, sync=sync)
        achieved = logdet.forward_flops(*size) / times["fused"]
        yield {
            "op": "brenier_logdet",
            "case": "B={} d={} H={} K={}".format(*size),
            "mode": "forward",
            "vmap(hessian) / fused": times["vmap(hessian)+slogdet"] / times["fused"],
            "brute force / fused": times.get("brute force (d backward passes)", float("nan")) / times["fused"],
            "fused GFLOP/s": achieved / 1e9,
            "fused / GEMM rate": achieved / gemm_flops_per_s,
        }
        backward = logdet.backward_implementations()
        times = median_times({name: logdet.forward_backward(fn, inputs) for name, fn in backward.items()}, rounds, warmup=1, sync=sync)
        yield {
            "op": "brenier_logdet",
            "case": "B={} d={} H={} K={}".format(*size),
            "mode": "forward+backward",
            "vmap(hessian) / fused": times["autograd through vmap(hessian)+slogdet"] / times["fused"],
            "brute force / fused": float("nan"),
            "fused GFLOP/s": float("nan"),
            "fused / GEMM rate": float("nan"),
        }


def aggregate_log_q_rows(rounds: int, gemm_flops_per_s: float, device="cpu"):
    impls = agg.implementations()
    sync = synchronizer(device)
    for batch, comps, dim in agg.SIZES:
        for mode in agg.MODES:
            inputs = agg.make_inputs(batch, comps, dim, mode != "forward", device=device)
            steps = {name: agg.step(fn, inputs, mode) for name, fn in impls.items()}
            eager_rounds = max(3, rounds // 10) if batch * comps * dim > 10**7 else rounds
            times = median_times({k: v for k, v in steps.items() if k != "reference (eager)"}, rounds, warmup=2, sync=sync)
            times.update(median_times({"reference (eager)": steps["reference (eager)"]}, eager_rounds, warmup=1, sync=sync))
            pair_dims = batch * comps * dim / times["fused"]
            ops = agg.MIN_OPS[mode]
            yield {
                "op": "aggregate_log_q",
                "case": f"B={batch} N={comps} d={dim}",
                "mode": mode,
                "eager / fused": times["reference (eager)"] / times["fused"],
                "compiled reference / fused": times["reference (compiled)"] / times["fused"],
                "compiled plain formula / fused": times["plain formula (compiled)"] / times["fused"],
                "fused G pair-dims/s": pair_dims / 1e9,
                # FMA-equivalents per second at the minimum count (an exp ~ 10 FMAs in float32)
                "fused / GEMM rate": pair_dims * (10 * ops["exp"] + ops["fma"]) * 2 / gemm_flops_per_s,
            }


def imq_mmd_rows(rounds: int, device="cpu"):
    sync = synchronizer(device)
    for batch, dim, per_dim in mmd.SIZES:
        impls = mmd.implementations(per_dim)
        for mode in mmd.MODES:
            inputs = mmd.make_inputs(batch, dim, mode != "forward", device=device)
            steps = {name: mmd.step(fn, inputs, mode) for name, fn in impls.items()}
            eager_rounds = max(3, rounds // 10) if batch * batch * (dim if per_dim else 1) > 10**6 else rounds
            times = median_times({k: v for k, v in steps.items() if k != "reference (eager)"}, rounds, warmup=2, sync=sync)
            times.update(median_times({"reference (eager)": steps["reference (eager)"]}, eager_rounds, warmup=1, sync=sync))
            anchor = times.get("anchor formula (compiled)")
            yield {
                "op": "imq_mmd",
                "case": f"B={batch} D={dim} {'per_dim' if per_dim else 'joint'}",
                "mode": mode,
                "eager / fused": times["reference (eager)"] / times["fused"],
                "compiled reference / fused": times["reference (compiled)"] / times["fused"],
                "compiled anchor formula / fused": anchor / times["fused"] if anchor else float("nan"),
                "fused ms": 1e3 * times["fused"],
                "fused G pair-dims/s": mmd.pair_dims(batch, dim, per_dim) / times["fused"] / 1e9,
            }


def print_table(title_columns, rows, formats):
    header = " ".join(f"{name:>{width}}" for name, width in title_columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        print(" ".join(fmt(row) for fmt in formats), flush=True)
        yield row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per implementation (median)")
    parser.add_argument("--out", help="also write the rows as JSON to this file (atomically)")
    parser.add_argument("--only", choices=("expfam_kl", "icnn_map", "brenier_logdet", "aggregate_log_q", "imq_mmd"),
                        help="measure one op's rows only")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where inputs live and every implementation runs (cuda: the current GPU; timings synchronise it)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)")
    if args.threads:
        torch.set_num_threads(args.threads)
    def want(op):
        return args.only in (None, op)

    device = args.device
    where = torch.cuda.get_device_name() if device == "cuda" else f"threads: {torch.get_num_threads()}"
    print(f"device: {device} ({where}); measuring copy bandwidth and GEMM rate ...", flush=True)
    bandwidth = measure_copy_bandwidth(device=device)
    rate = icnn.gemm_rate(device=device)
    rows = []
    if want("expfam_kl"):
        kl_columns = [("op", 10), ("case", 16), ("mode", 17), ("eager/fused", 12), ("cref/fused", 11), ("ctextbook/fused", 16), ("fused/floor", 12)]
        kl_formats = [
            lambda r: f"{r['op']:>10}", lambda r: f"{r['case']:>16}", lambda r: f"{r['mode']:>17}",
            lambda r: f"{r['eager / fused']:>11.2f}x", lambda r: f"{r['compiled reference / fused']:>10.2f}x",
            lambda r: f"{r['compiled textbook / fused']:>15.2f}x", lambda r: f"{r['fused / bandwidth floor']:>11.2f}x",
        ]
        rows += list(print_table(kl_columns, expfam_kl_rows(args.rounds, bandwidth, device), kl_formats))
        print("expfam_kl: cref = torch.compile(reference, expm1 forms), ctextbook = torch.compile(textbook Gaussian formula "
              "with plain exp); fused/floor = fused time / (bytes that must move / copy bandwidth)\n")
    if want("icnn_map"):
        icnn_columns = [("op", 10), ("case", 24), ("mode", 17), ("ref/fused", 10), ("GFLOP/s", 9), ("of GEMM rate", 13)]
        icnn_formats = [
            lambda r: f"{r['op']:>10}", lambda r: f"{r['case']:>24}", lambda r: f"{r['mode']:>17}",
            lambda r: f"{r['reference / fused']:>9.2f}x", lambda r: f"{r['fused GFLOP/s']:>9.1f}",
            lambda r: f"{100 * r['fused / GEMM rate']:>12.0f}%",
        ]
        rows += list(print_table(icnn_columns, icnn_map_rows(max(5, args.rounds // 3), rate, device), icnn_formats))
        print(f"icnn_map: reference = autograd double backprop; GEMM rate measured here: {rate / 1e9:.1f} GFLOP/s (fp32 1024^3, best of 20)\n")
    if want("brenier_logdet"):
        logdet_columns = [("op", 14), ("case", 24), ("mode", 17), ("vmap/fused", 11), ("brute/fused", 12), ("GFLOP/s", 9), ("of GEMM rate", 13)]
        logdet_formats = [
            lambda r: f"{r['op']:>14}", lambda r: f"{r['case']:>24}", lambda r: f"{r['mode']:>17}",
            lambda r: f"{r['vmap(hessian) / fused']:>10.2f}x", lambda r: f"{r['brute force / fused']:>11.2f}x",
            lambda r: f"{r['fused GFLOP/s']:>9.1f}", lambda r: f"{100 * r['fused / GEMM rate']:>12.0f}%",
        ]
        rows += list(print_table(logdet_columns, brenier_logdet_rows(max(5, args.rounds // 3), rate, device), logdet_formats))
        print("brenier_logdet: forward+backward compares autograd through vmap(hessian)+slogdet; GFLOP/s counts "
              "2B[(K-1)H²d + KHd²] + Bd³/3 (nan: not measured for that row)\n")
    if want("aggregate_log_q"):
        agg_columns = [("op", 15), ("case", 20), ("mode", 17), ("eager/fused", 12), ("cref/fused", 11), ("cplain/fused", 13), ("Gpair-d/s", 10), ("of GEMM", 8)]
        agg_formats = [
            lambda r: f"{r['op']:>15}", lambda r: f"{r['case']:>20}", lambda r: f"{r['mode']:>17}",
            lambda r: f"{r['eager / fused']:>11.1f}x", lambda r: f"{r['compiled reference / fused']:>10.1f}x",
            lambda r: f"{r['compiled plain formula / fused']:>12.1f}x", lambda r: f"{r['fused G pair-dims/s']:>10.2f}",
            lambda r: f"{100 * r['fused / GEMM rate']:>7.0f}%",
        ]
        rows += list(print_table(agg_columns, aggregate_log_q_rows(max(5, args.rounds // 3), rate, device), agg_formats))
        print("aggregate_log_q: cref = torch.compile(reference), cplain = torch.compile(plain Gaussian formula); of GEMM = "
              "(pair-dims/s x minimum FMA-equivalents per pair-dim, an exp counted as 10) / GEMM FMA rate")
    if want("imq_mmd"):
        mmd_columns = [("op", 8), ("case", 22), ("mode", 17), ("eager/fused", 12), ("cref/fused", 11), ("canchor/fused", 14), ("fused ms", 9), ("Gpair-d/s", 10)]
        mmd_formats = [
            lambda r: f"{r['op']:>8}", lambda r: f"{r['case']:>22}", lambda r: f"{r['mode']:>17}",
            lambda r: f"{r['eager / fused']:>11.1f}x", lambda r: f"{r['compiled reference / fused']:>10.1f}x",
            lambda r: f"{r['compiled anchor formula / fused']:>13.1f}x", lambda r: f"{r['fused ms']:>9.2f}",
            lambda r: f"{r['fused G pair-dims/s']:>10.2f}",
        ]
        rows += list(print_table(mmd_columns, imq_mmd_rows(max(5, args.rounds // 3), device), mmd_formats))
        print("imq_mmd: float32, x and y both require grad for forward+backward; cref = torch.compile(reference "
              "[n, m, D] formula), canchor = torch.compile(the anchor's per-scale formula; per_dim only); Gpair-d/s = "
              "(n(n-1) + nm) pairs x D (per_dim) / fused time")
    print("all ratios are medians of interleaved calls in this one process"
          + (" (each call followed by torch.cuda.synchronize)" if device == "cuda" else ""))
    if args.out:
        directory = os.path.dirname(os.path.abspath(args.out))
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
            json.dump({"device": device, "device_name": where if device == "cuda" else "cpu",
                       "threads": torch.get_num_threads(), "copy_bandwidth_bytes_per_s": bandwidth, "gemm_flops_per_s": rate, "rows": rows}, handle, indent=2)
        os.replace(handle.name, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
