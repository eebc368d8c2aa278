"""Run by torchrun in tests/test_distributed.py (and by hand): train a small float64 iVAE with
ivae_ext.fit on every rank, then rank 0 saves the parameters and history to OUT.

    torchrun --standalone --nproc_per_node=2 tests/distributed_worker.py OUT [--epochs E]
        [--stop-after K] [--resume] [--batch-size B] [--rows N]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distributed_setup import train_small_ivae  # noqa: E402

from ivae_ext import distributed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--stop-after", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rows", type=int, default=157)  # 157 = 4 × 32 + 29: the last global batch splits 15 / 14
    args = p.parse_args()
    torch.set_num_threads(1)
    model, history = train_small_ivae(args.epochs, args.batch_size, args.rows,
                                      checkpoint=os.path.join(args.out, "checkpoint.pt"), resume=args.resume,
                                      stop_after=args.stop_after)
    if distributed.is_main_process():
        torch.save({"state": model.state_dict(), "losses": [r["loss"] for r in history["epochs"]],
                    "context": distributed.run_info()}, os.path.join(args.out, "result.pt"))


if __name__ == "__main__":
    status = 1
    try:
        main()
        status = 0
    finally:
        distributed.finish(status)
