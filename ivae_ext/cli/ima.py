"""The IMA-VAE family of the command line: a VAE with a near-deterministic decoder on mixed sources.

``train --model ima --data moebius|moebius_linear|mlp|PATH.npz`` and ``reproduce ima``. The
interface every family module exposes is described in ivae_ext.cli.
"""

from __future__ import annotations

import argparse

NAME = "ima"
TRAIN_MODELS = ("ima",)
REPRODUCE_EXPERIMENTS = ("ima",)
SUMMARY = "IMA-VAE on Möbius / MLP mixtures or an .npz with x (and optionally s)"
TRAIN_HELP_HINT = "--model ima --help"
MODEL_HELP = "the IMA-VAE (fixed small decoder variance; uniform, Gaussian or Laplace prior)"
TRAIN_HELP = "train one IMA-VAE and write metrics.json, curves.png, sources.png"
TRAIN_DESCRIPTION = (
    "Train a VAE with a fixed, small Gaussian decoder variance (IMA-VAE) on sources mixed by a Möbius "
    "map, a Möbius map followed by a linear map, or an MLP, or on your .npz. The parameters reported "
    "are those of the best validation −ELBO (20% of the data, every --val-every epochs; training "
    "stops after --patience epochs without improvement). Writes OUT/metrics.json (MCC on posterior "
    "means and samples, KL per latent, c_IMA of the learned decoder and of the true mixing, "
    "self-consistency errors, wall time, config), OUT/curves.png, OUT/sources.png (true vs recovered "
    "sources), OUT/model.pt and checkpoints for --resume."
)
REPRODUCE_HELP = "reproduce IMA-VAE's claim (source recovery at small decoder variance, collapse at large)"
REPRODUCE_DESCRIPTION = (
    "Train the IMA-VAE on Möbius data (d = 3) at decoder variances 1e-1 … 1e-5, and on MLP and "
    "Möbius + linear-map data, over several seeds; write OUT/table.md and OUT/table.json (MCC, c_IMA, "
    "KL, −ELBO per seed and mean ± std) and every run's outputs under OUT/<setting>/seed<k>/."
)


def handles_train(model: str, data: str) -> bool:
    return model == "ima"


def _add_data_args(p: argparse.ArgumentParser, reproduce: bool = False) -> None:
    from ivae_ext.data.mixing import SOURCE_DISTRIBUTIONS

    g = p.add_argument_group("data")
    if not reproduce:
        g.add_argument("--data", default="moebius",
                       help="'moebius' (conformal: in the IMA class), 'moebius_linear' (then a unit-det linear "
                            "map: not), 'mlp' (smooth leaky-ReLU MLP), or PATH.npz with x [N, D] and optionally "
                            "s [N, n]")
    g.add_argument("--sources", type=int, default=3, dest="n_sources", help="generated data: number of sources n (= D)")
    g.add_argument("--source-distribution", dest="source_distribution", choices=SOURCE_DISTRIBUTIONS,
                   default="uniform", help="generated data: the sources' distribution")
    g.add_argument("--n", "--size", dest="n", type=int, default=60000,
                   help="generated data: points (split 70/20/10); --size under torchrun, which takes --n for its own")
    g.add_argument("--data-seed", type=int, default=5,
                   help="seed of the sources, the mixing and the split (5: the Möbius data closest in scale to the "
                        "anchor's; see docs/IMA.md)")
    g.add_argument("--mlp-weights", choices=("orthogonal", "uniform"), default="orthogonal",
                   help="MLP mixing: orthogonal weights, or U(1, 3) entries")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from ivae_ext.models.imavae import PRIORS
    from ivae_ext.models.nets import ACTIVATIONS

    g = p.add_argument_group("model")
    g.add_argument("--prior", choices=PRIORS, default="uniform",
                   help="p(z): uniform on the cube (a sigmoid-pushed Gaussian posterior), N(0, I) or Laplace")
    g.add_argument("--decoder-var", type=float, default=1e-4, help="the decoder's fixed variance γ⁻² (absolute)")
    g.add_argument("--decoder-var-relative", type=float, default=None,
                   help="instead: this times the training data's mean per-dimension variance")
    g.add_argument("--anneal-epochs", type=int, default=0,
                   help="γ annealing: start at --anneal-factor × the decoder variance and shrink it geometrically "
                        "to it over this many epochs (0: off); the model is selected at the target variance only")
    g.add_argument("--anneal-factor", type=float, default=1000.0, help="see --anneal-epochs")
    g.add_argument("--hidden-dim", type=int, default=None, help="MLP width (default 10 × sources)")
    g.add_argument("--encoder-hidden-dim", type=int, default=None, help="the encoder's width (default --hidden-dim)")
    g.add_argument("--n-layers", type=int, default=2, help="linear layers of encoder and decoder")
    g.add_argument("--activation", choices=ACTIVATIONS, default="lrelu",
                   help="nonlinearity of encoder and decoder (lrelu: leaky ReLU, slope 0.2)")


def _add_train_args(p: argparse.ArgumentParser, reproduce: bool = False) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=300, help="passes over the data, at most")
    g.add_argument("--patience", type=int, default=0,
                   help="stop once the validation -ELBO has not improved by --min-improvement for this many "
                        "epochs (0: never)")
    g.add_argument("--min-improvement", type=float, default=0.0, help="see --patience")
    g.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    g.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    g.add_argument("--schedule", choices=("none", "cosine"), default="cosine",
                   help="learning rate: constant (the anchor's), or cosine decay to 0 over --epochs")
    g.add_argument("--val-every", type=int, default=5, help="epochs between validation evaluations")
    if not reproduce:
        g.add_argument("--seed", type=int, default=0, help="seed of the initialisation, shuffling and noise")
        g.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")


KEYS = ("n_sources", "n", "data_seed", "mlp_weights", "prior", "decoder_var", "decoder_var_relative",
        "anneal_epochs", "anneal_factor",
        "hidden_dim", "encoder_hidden_dim", "n_layers", "activation", "epochs", "patience", "min_improvement", "batch_size", "lr",
        "schedule", "val_every")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    _add_data_args(p)
    _add_model_args(p)
    _add_train_args(p)


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    from ivae_ext.experiments.ima import SETTINGS

    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (the data stay the same)")
    p.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS),
                   help="which rows to train")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once (one process and thread each)")
    _add_data_args(p, reproduce=True)
    _add_model_args(p)
    _add_train_args(p, reproduce=True)


def _config(args: argparse.Namespace, **extra):
    from ivae_ext.experiments.ima import IMAConfig

    return IMAConfig(**{k: getattr(args, k) for k in KEYS}, sources=args.source_distribution, **extra)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ivae_ext.experiments.ima import run_ima_train

    torch.set_num_threads(1)
    cfg = _config(args, data=args.data, seed=args.seed, progress=args.progress)
    m = run_ima_train(cfg, args.out, resume=args.resume, log=lambda *_: None)
    mcc = f"MCC {m['mcc']:.3f} (samples {m['mcc_samples']:.3f}), " if "mcc" in m else ""
    true = f" (true mixing {m['cima_true']:.3g})" if "cima_true" in m else ""
    print(f"ima: {mcc}c_IMA {m['cima']:.3g}{true}, KL {m['kl']:.3f} nats, -ELBO {m['neg_elbo']:.3f} (test; epoch "
          f"{m['selected_epoch']} by validation -ELBO), decoder var {m['decoder_var']:.3g} "
          f"({m['decoder_var_relative']:.3g} × data var), {m['train_time_s']:.0f} s; wrote {args.out}/metrics.json, "
          f"curves.png" + (", sources.png" if "mcc" in m else ""))
    return 0


def run_reproduce(args: argparse.Namespace) -> int:
    from ivae_ext.experiments.ima import format_ima_table, reproduce_ima

    base = _config(args, progress=False)
    result = reproduce_ima(base, args.seeds, args.out, settings=args.settings, jobs=args.jobs, resume=args.resume)
    print(format_ima_table(result))
    print(f"wrote {args.out}/table.md and table.json")
    return 0
