"""brenier_logdet's backward on the CPU: the register tiles (cpu/brenier_tiled_backward.cpp)
against the ATen-GEMM sequence (ops/brenier_logdet.cpp, the path CUDA takes), interleaved in one
process (issue 17).

    python benchmarks/logdet_backward_paths.py [--threads 2] [--rounds 15] [--out F.json]

Both candidates run the same tiled forward (the d x d form: IVAE_LOGDET_FORM=full) and differ in
the backward only: IVAE_ICNN_CPU_PATH is "tiles" or "aten" while autograd runs it. Reports, per
size, the median-time ratio ATen / tiles of forward + backward to x and every parameter
(icnn_map_cases.make_inputs) and the largest gradient difference relative to the gradient's size.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brenier_logdet_cases import with_env  # noqa: E402
from icnn_map_cases import make_inputs  # noqa: E402
from timing import median_times  # noqa: E402

from ivae_ext.experiments.common import write_json  # noqa: E402
from ivae_ext.ops import brenier_logdet  # noqa: E402

SIZES = [(1024, 16, 64, 4), (256, 64, 128, 4), (1024, 8, 32, 3), (4096, 2, 32, 3)]


def step(inputs, backward_path: str):
    """Forward on the tiles, backward on `backward_path`: the gradients of the mean log det."""

    def run():
        logdet = with_env({"IVAE_ICNN_CPU_PATH": "tiles", "IVAE_LOGDET_FORM": "full"},
                          lambda: brenier_logdet(*inputs, check=False).mean())
        return with_env({"IVAE_ICNN_CPU_PATH": backward_path, "IVAE_LOGDET_FORM": "full"},
                        lambda: torch.autograd.grad(logdet, inputs))

    return run


def compare(size, rounds: int) -> dict:
    inputs = make_inputs(*size)
    tiles, aten = step(inputs, "tiles"), step(inputs, "aten")
    difference = max(float((a - t).abs().max() / a.abs().max().clamp_min(1e-30)) for a, t in zip(aten(), tiles()))
    times = median_times({"aten": aten, "tiles": tiles}, rounds)
    return {"B": size[0], "d": size[1], "H": size[2], "K": size[3], "ratio_aten_over_tiles": times["aten"] / times["tiles"],
            "max_relative_gradient_difference": difference}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} rounds={args.rounds}; ratio = ATen-sequence backward / tiled backward "
          "(forward + backward time, same tiled forward)")
    rows = []
    for size in SIZES:
        row = compare(size, args.rounds)
        rows.append(row)
        print("B={B} d={d} H={H} K={K}: {ratio_aten_over_tiles:.2f}x (gradients differ by "
              "{max_relative_gradient_difference:.1e} of their size)".format(**row), flush=True)
    if args.out:
        write_json(args.out, {"threads": args.threads, "rounds": args.rounds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
