"""Run a torchrun training command several times in a row and count the exit statuses (the
upstream Gloo exit-abort guard in ivae_ext.distributed.finish should make every one 0), and
compare the MCC of each run with a single-process run of the same command.

    python benchmarks/torchrun_repeat.py --runs 20 --out runs/torchrun-repeat [-- extra train args]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ivae_ext.experiments.common import write_json  # noqa: E402

SMALL = ["--model", "ivae", "--data", "tcl", "--sources", "3", "--segments", "10", "--per-segment", "200",
         "--epochs", "10", "--batch-size", "64", "--no-progress"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("train_args", nargs="*", help="train options after --model (default: a small iVAE run)")
    args = p.parse_args()
    train_args = args.train_args or SMALL
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single_out = os.path.join(args.out, "single")
    t0 = time.perf_counter()
    single = subprocess.run([sys.executable, "-m", "ivae_ext", "train", *train_args, "--out", single_out],
                            capture_output=True, text=True, env=env)
    record = {"train_args": train_args, "nproc": args.nproc, "single_status": single.returncode, "runs": []}
    if single.returncode == 0:
        record["single_mcc"] = json.load(open(os.path.join(single_out, "metrics.json"))).get("mcc")
    for k in range(args.runs):
        out = os.path.join(args.out, f"run{k}")
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={args.nproc}", "-m", "ivae_ext", "train", *train_args, "--out", out],
                              capture_output=True, text=True, env=env)
        run = {"status": proc.returncode, "aborted": "terminate called" in proc.stderr}
        if proc.returncode == 0:
            m = json.load(open(os.path.join(out, "metrics.json")))
            run.update(mcc=m.get("mcc"), world_size=m["world_size"], backend=m["backend"],
                       files=sorted(os.listdir(out)))
        else:
            run["stderr_tail"] = proc.stderr[-2000:]
        record["runs"].append(run)
        print(f"run {k}: exit {proc.returncode}" + (f", MCC {run['mcc']:.4f}" if "mcc" in run else ""), flush=True)
    statuses = [r["status"] for r in record["runs"]]
    record["exit_0"] = statuses.count(0)
    record["wall_time_s"] = time.perf_counter() - t0
    write_json(os.path.join(args.out, "torchrun_repeat.json"), record)
    print(f"{record['exit_0']} of {args.runs} torchrun runs exited 0; single-process MCC {record.get('single_mcc')}")
    return 0 if record["exit_0"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
