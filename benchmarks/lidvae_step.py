"""LIDVAE training step (forward + backward + Adam step) on the fused ops vs the same model on the
pure-PyTorch reference ops (``ivae_ext.ops.use_reference_ops``: ∇ψ by autograd with
create_graph=True, the double backpropagation the official code uses), interleaved in one process.

    python benchmarks/lidvae_step.py [--threads 1] [--rounds 30] [--out lidvae_step.json]

Reports the ratio of median step times (reference / fused); absolute times are not results on a
shared machine. The model is the reproduction's LIDVAE on digits (D = 64, d = 16, batch 100).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_times  # noqa: E402

from ivae_ext.data import load_digits_binary  # noqa: E402
from ivae_ext.experiments.common import write_json  # noqa: E402
from ivae_ext.experiments.lidvae import ImageConfig, build_image_model  # noqa: E402
from ivae_ext.ops import use_reference_ops  # noqa: E402
from ivae_ext.training import backward_and_step, make_optimizer  # noqa: E402


def make_step(model, x, clip_grad: float, reference: bool):
    """One step exactly as ``ivae_ext.training.fit`` takes it (fused Adam, gradient clipping)."""
    opt = make_optimizer(model, lr=1e-4)

    def step():
        with use_reference_ops() if reference else contextlib.nullcontext():
            loss = model.loss({"x": x})["loss"]
            backward_and_step(model, opt, loss, clip_grad)

    return step


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the CLI trains with 1)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--icnn-hidden", type=int, default=None, help="override the ICNN width (default: the CLI's)")
    p.add_argument("--icnn-layers", type=int, default=None, help="override the ICNN depth (default: the CLI's)")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    x = load_digits_binary().x_train[: args.batch_size]
    results = {}
    for name, overrides in (("lidvae", {}), ("lidvae_anchor", {"anchor_recipe": True})):
        sizes = {k: v for k, v in (("icnn_hidden", args.icnn_hidden), ("icnn_layers", args.icnn_layers)) if v}
        cfg = ImageConfig(model="lidvae", **overrides, **sizes)
        torch.manual_seed(0)
        fused_model = build_image_model(cfg, x.shape[1], "bernoulli")
        ref_model = build_image_model(cfg, x.shape[1], "bernoulli")
        ref_model.load_state_dict(fused_model.state_dict())
        with torch.no_grad():  # same numbers either way (checked here, tested in tests/)
            torch.manual_seed(1)
            a = fused_model.loss({"x": x})["loss"]
            torch.manual_seed(1)
            with use_reference_ops():
                b = ref_model.loss({"x": x})["loss"]
        times = median_times({"fused": make_step(fused_model, x, cfg.clip_grad, False),
                              "reference": make_step(ref_model, x, cfg.clip_grad, True)},
                             rounds=args.rounds)
        results[name] = {"ratio_reference_over_fused": times["reference"] / times["fused"],
                         "loss_difference": float((a - b).abs())}
        print(f"{name}: training step, reference / fused = {results[name]['ratio_reference_over_fused']:.2f}x "
              f"(batch {args.batch_size}, {args.threads} thread(s), median of {args.rounds}; "
              f"|loss difference| {results[name]['loss_difference']:.1e})")
    out = {"icnn_hidden": cfg.icnn_hidden, "icnn_layers": cfg.icnn_layers, "threads": args.threads, "rounds": args.rounds, "batch_size": args.batch_size, "results": results}
    if args.out:
        write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
