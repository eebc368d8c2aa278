"""Peak extra memory of aggregate_log_q's forward+backward on the CPU, each case in a fresh process.

Usage: python benchmarks/aggregate_log_q_memory.py [--dim 32] [--budget-gb 2] [--max-size 32768]
                                                   [--out FILE.json]
For each implementation (eager reference, torch.compile of the plain Gaussian formula, fused) it
finds the largest B = N whose forward+backward stays within the budget (doubling, then bisecting
to 1/8 of the last step), and measures the fused op at B = N = 8192. The search stops at
--max-size: beyond it the fused op is bound by time, not memory.

Method, in the child process: MALLOC_MMAP_THRESHOLD_ makes freed buffers go back to the OS, so
the resident set tracks live memory; inputs are built and one warm-up call runs (compilation);
the kernel's peak-RSS counter is reset (/proc/self/clear_refs, 5) and one forward+backward runs;
the result is VmHWM minus the resident set just before the call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

IMPLEMENTATIONS = ("reference (eager)", "plain formula (compiled)", "fused")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(impl: str, size: int, dim: int) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch

    import aggregate_log_q_cases as cases

    fn = cases.implementations()[impl]
    inputs = cases.make_inputs(size, size, dim, requires_grad=True)
    run = cases.step(fn, inputs, "forward+backward")
    if impl != "reference (eager)":
        run()  # compile / first-call setup, outside the measurement
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = _status_kb("VmRSS")
    grads = run()
    peak = _status_kb("VmHWM")
    assert all(torch.isfinite(g).all() for g in grads)
    return {"impl": impl, "size": size, "dim": dim, "peak_extra_bytes": (peak - before) * 1024}


def measure(impl: str, size: int, dim: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, __file__, "--child", impl, str(size), str(dim)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"impl": impl, "size": size, "dim": dim, "error": out.stderr.strip().splitlines()[-1:]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {impl:>26}  B = N = {size:>6}: {result['peak_extra_bytes'] / 2**20:9.1f} MiB", flush=True)
    return result


def largest_within(impl: str, dim: int, budget: int, max_size: int) -> dict:
    fits = lambda r: "error" not in r and r["peak_extra_bytes"] <= budget  # noqa: E731
    size, best, trail = 512, None, []
    while size <= max_size:
        r = measure(impl, size, dim)
        trail.append(r)
        if not fits(r):
            break
        best = r
        size *= 2
    if best is not None and size <= max_size:  # bisect between best and the first failure
        low, high = best["size"], size
        while high - low > max(64, best["size"] // 8):
            mid = (low + high) // 2
            r = measure(impl, mid, dim)
            trail.append(r)
            if fits(r):
                best, low = r, mid
            else:
                high = mid
    return {"impl": impl, "largest": best, "bounded_by_max_size": size > max_size, "measurements": trail}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "SIZE", "DIM"), help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--budget-gb", type=float, default=2.0)
    parser.add_argument("--max-size", type=int, default=32768)
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, action="append", help="default: all")
    parser.add_argument("--out", help="write the results as JSON to this file (atomically)")
    args = parser.parse_args(argv)
    if args.child:
        impl, size, dim = args.child
        print(json.dumps(child(impl, int(size), int(dim))))
        return 0
    budget = int(args.budget_gb * 2**30)
    results = {"dim": args.dim, "budget_bytes": budget}
    print(f"fused at B = N = 8192, d = {args.dim}:")
    results["fused_8192"] = measure("fused", 8192, args.dim)
    results["largest_within_budget"] = []
    for impl in args.impl or IMPLEMENTATIONS:
        print(f"{impl}: largest B = N within {args.budget_gb:g} GiB")
        r = largest_within(impl, args.dim, budget, args.max_size)
        results["largest_within_budget"].append(r)
        best = r["largest"]
        note = " (search capped: time-bound, not memory-bound)" if r["bounded_by_max_size"] else ""
        if best is None:
            print("  -> none from 512 up fits")
        else:
            print(f"  -> {best['size']} at {best['peak_extra_bytes'] / 2**20:.1f} MiB{note}")
    if args.out:
        directory = os.path.dirname(os.path.abspath(args.out))
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
            json.dump(results, handle, indent=2)
        os.replace(handle.name, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
