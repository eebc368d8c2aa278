"""LIDVAE training step (forward + backward + Adam step) on the fused ops vs the same model on the
pure-PyTorch reference ops (``ivae_ext.ops.use_reference_ops``: ∇ψ by autograd with
create_graph=True, the double backpropagation the official code uses), interleaved in one process.

    python benchmarks/lidvae_step.py [--threads 1] [--rounds 30] [--out lidvae_step.json]

Reports the ratio of median step times (reference / fused); absolute times are not results on a
shared machine. Also times the step with zero-cost stand-ins for the ICNNs, which splits the step
into its ICNN part (the ICNN-only ratio) and the rest, and bounds what any ICNN op could give
(reference / ICNN-free: Amdahl's law). The model is the reproduction's LIDVAE on digits (D = 64, d = 16, batch 100).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_times  # noqa: E402

from ivae_ext.data import load_digits_binary  # noqa: E402
from ivae_ext.experiments.common import write_json  # noqa: E402
from ivae_ext.experiments.lidvae import ImageConfig, build_image_model  # noqa: E402
from ivae_ext.nn import brenier as brenier_module  # noqa: E402
from ivae_ext.nn import icnn as icnn_module  # noqa: E402
from ivae_ext.ops import use_reference_ops  # noqa: E402
from ivae_ext.training import backward_and_step, make_optimizer  # noqa: E402


def _free_icnn_map(x, A, b, W, w, alpha):
    """A stand-in for icnn_map that costs O(size of its inputs) and keeps every input in the graph:
    the step with it is what the model costs outside the ICNNs, the floor no ICNN op can beat."""
    tie = (A.sum() + b.sum() + W.sum() + w.sum() + alpha) * 0
    return (x * x).sum(-1) * 0.5 + tie, x + tie


@contextlib.contextmanager
def free_icnns():
    saved = (icnn_module.icnn_map, brenier_module.icnn_map)
    icnn_module.icnn_map = brenier_module.icnn_map = _free_icnn_map
    try:
        yield
    finally:
        icnn_module.icnn_map, brenier_module.icnn_map = saved


def make_step(model, x, clip_grad: float, mode: str):
    """One step exactly as ``ivae_ext.training.fit`` takes it (fused Adam, gradient clipping), on
    the fused ops, the reference ops, or free ICNNs."""
    opt = make_optimizer(model, lr=1e-4)
    context = {"fused": contextlib.nullcontext, "reference": use_reference_ops, "icnn_free": free_icnns}[mode]

    def step():
        with context():
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
        free_model = build_image_model(cfg, x.shape[1], "bernoulli")
        free_model.load_state_dict(fused_model.state_dict())
        times = median_times({mode: make_step(m, x, cfg.clip_grad, mode) for mode, m in
                              (("fused", fused_model), ("reference", ref_model), ("icnn_free", free_model))},
                             rounds=args.rounds)
        ratio = times["reference"] / times["fused"]
        # Amdahl: even a zero-cost fused ICNN leaves the rest of the step (encoder, lift, loss, Adam)
        bound = times["reference"] / times["icnn_free"]
        icnn_share = {mode: (times[mode] - times["icnn_free"]) / times[mode] for mode in ("fused", "reference")}
        results[name] = {"ratio_reference_over_fused": ratio, "ratio_bound_with_free_icnns": bound,
                         "icnn_ratio_reference_over_fused": (times["reference"] - times["icnn_free"])
                         / max(times["fused"] - times["icnn_free"], 1e-12),
                         "icnn_share_of_step": icnn_share, "loss_difference": float((a - b).abs())}
        print(f"{name}: training step, reference / fused = {ratio:.2f}x; the ICNNs alone "
              f"{results[name]['icnn_ratio_reference_over_fused']:.2f}x (their share of the step: fused "
              f"{100 * icnn_share['fused']:.0f}%, reference {100 * icnn_share['reference']:.0f}%); bound with "
              f"zero-cost ICNNs {bound:.2f}x (batch {args.batch_size}, {args.threads} thread(s), median of "
              f"{args.rounds}; |loss difference| {results[name]['loss_difference']:.1e})")
    out = {"icnn_hidden": cfg.icnn_hidden, "icnn_layers": cfg.icnn_layers, "threads": args.threads, "rounds": args.rounds, "batch_size": args.batch_size, "results": results}
    if args.out:
        write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
