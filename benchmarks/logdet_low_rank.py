"""brenier_logdet's low-rank form against its d x d form, interleaved in one process (issue 17).

    python benchmarks/logdet_low_rank.py [--threads 2] [--rounds 15] [--out F.json]

When K*H < d the Hessian αI + Jᵀ C J is αI plus a rank-(K*H) term and the op works with the
K*H x K*H capacitance matrix instead (ops/brenier_logdet.h). Both forms are the same op; the
environment variable IVAE_LOGDET_FORM=full forces the d x d one, so each candidate sets it for
its own calls. Reports, per size, the median-time ratio d x d / low-rank for the forward alone
(no gradient) and for forward + backward to x and every parameter (icnn_map_cases.make_inputs:
W, w >= 0, α = 0.5), and the largest log det difference between the forms.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brenier_logdet_cases import forward_backward, forward_only, with_env  # noqa: E402
from icnn_map_cases import make_inputs  # noqa: E402
from timing import median_times  # noqa: E402

from ivae_ext.experiments.common import write_json  # noqa: E402
from ivae_ext.ops import brenier_logdet  # noqa: E402

# (B, d, H, K) with K*H < d: half, a quarter and an eighth of d.
SIZES = [(1024, 32, 8, 2), (512, 64, 16, 2), (512, 64, 8, 2), (256, 128, 16, 4), (256, 128, 8, 2)]


def in_form(form: str, fn):
    """fn, to be run with IVAE_LOGDET_FORM=form."""
    return lambda: with_env({"IVAE_LOGDET_FORM": form}, fn)


def logdet(*args):
    return brenier_logdet(*args, check=False)


def compare(size, rounds: int) -> dict:
    inputs = make_inputs(*size)
    row = {"B": size[0], "d": size[1], "H": size[2], "K": size[3]}
    detached = [t.detach() for t in inputs]
    row["max_abs_logdet_difference"] = float(
        (in_form("full", lambda: logdet(*detached))() - in_form("auto", lambda: logdet(*detached))()).abs().max()
    )
    for label, make in (("forward", forward_only), ("forward_backward", forward_backward)):
        step = make(logdet, inputs)
        times = median_times({"full": in_form("full", step), "low_rank": in_form("auto", step)}, rounds)
        row[f"{label}_ratio"] = times["full"] / times["low_rank"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"threads={args.threads} rounds={args.rounds}; ratio = d x d form time / low-rank form time")
    for size in SIZES:
        row = compare(size, args.rounds)
        rows.append(row)
        print("B={B} d={d} H={H} K={K} (K*H={r}): forward {forward_ratio:.2f}x, forward+backward "
              "{forward_backward_ratio:.2f}x, max |logdet difference| {max_abs_logdet_difference:.2e}".format(
                  r=row["K"] * row["H"], **row), flush=True)
    if args.out:
        write_json(args.out, {"threads": args.threads, "rounds": args.rounds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
