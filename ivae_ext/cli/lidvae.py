"""The LIDVAE family of the command line: LIDVAE and its MLP-decoder baselines on image-like data.

``train --model lidvae|vae --data digits|idx:DIR|PATH.npz`` and ``reproduce lidvae``. The
interface every family module exposes is described in ivae_ext.cli.
"""

from __future__ import annotations

import argparse
import os

NAME = "lidvae"
TRAIN_MODELS = ("lidvae", "vae")
REPRODUCE_EXPERIMENTS = ("lidvae",)
SUMMARY = "LIDVAE / VAE on images (digits, IDX files, or an .npz with x and no u)"
TRAIN_HELP_HINT = "--model lidvae --help (or --data digits --help)"
MODEL_HELP = "LIDVAE (injective Brenier-map decoder) or the VAE with an MLP decoder (β-VAE with --beta)"
TRAIN_HELP = "train one model and write metrics.json, curves.png, images.png"
TRAIN_DESCRIPTION = (
    "Train a LIDVAE or a VAE on images. The parameters reported are those of the best validation "
    "−ELBO (10% of the training split, every --val-every epochs; training stops after --patience "
    "epochs without improvement). Writes OUT/metrics.json (AU, KL, "
    "MI, IW-LL, −ELBO on the test split, per-latent variance and decoder sensitivity, wall time, "
    "config), OUT/curves.png, OUT/images.png (test images, reconstructions, samples), OUT/model.pt "
    "and checkpoints for --resume."
)
REPRODUCE_HELP = "reproduce LIDVAE's claim (no collapsed latent, likelihood as a VAE's)"
REPRODUCE_DESCRIPTION = (
    "Train VAE, β-VAE, LIDVAE with the official recipe, LIDVAE and its ablations over several "
    "seeds on digits, and write OUT/table.md and OUT/table.json (AU, KL, MI, IW-LL, −ELBO per seed "
    "and mean ± std), plus every run's own outputs under OUT/<variant>/seed<k>/."
)


def _is_image_npz(path: str) -> bool:
    """An .npz without a 'u' array (the iVAE family's files hold u)."""
    import numpy as np

    try:
        with np.load(path) as f:
            return "u" not in f.files
    except (OSError, ValueError):
        return True  # unreadable: let the image loader report it


def handles_train(model: str, data: str) -> bool:
    """LIDVAE on anything (default digits); the VAE on digits, IDX directories and .npz without u."""
    if model == "lidvae":
        return True
    data = os.fspath(data)
    if data == "digits" or data.startswith("idx:"):
        return True
    return data.lower().endswith(".npz") and _is_image_npz(data)


def _add_data_args(p: argparse.ArgumentParser, reproduce: bool = False) -> None:
    g = p.add_argument_group("data")
    if not reproduce:
        g.add_argument("--data", default="digits",
                       help="'digits' (sklearn's 8×8 digits binarised at 0.5, 1437 train / 360 test), "
                            "'idx:DIR' (MNIST-style IDX files already on disk), or PATH.npz with x [N, D] "
                            "(binary → Bernoulli, else Gaussian) and optionally x_test")
        g.add_argument("--limit", type=int, default=None, help="IDX: read at most this many images per split")
    g.add_argument("--latent-dim", type=int, default=16, help="latent size d")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--likelihood", choices=("auto", "bernoulli", "gaussian"), default="auto",
                   help="p(x|z); auto: Bernoulli for 0/1 data, else Gaussian")
    g.add_argument("--decoder-var", type=float, default=0.1, help="(initial) variance of a Gaussian likelihood")
    g.add_argument("--learn-decoder-var", action="store_true", help="learn the Gaussian variance per dimension")
    g.add_argument("--prior", choices=("gaussian", "gmm"), default="gaussian",
                   help="N(0, I), or a learned Gaussian mixture with categorical y (GMVAE objective)")
    g.add_argument("--components", type=int, default=10, help="K of the mixture prior")
    g.add_argument("--beta", type=float, default=1.0, help="KL weight (β-VAE when ≠ 1)")
    g.add_argument("--encoder-hidden", type=int, default=512, help="width of the encoder MLP (ReLU)")
    g.add_argument("--encoder-layers", type=int, default=3, help="linear layers of the encoder")
    g.add_argument("--decoder-hidden", type=int, default=512, help="VAE: width of the MLP decoder")
    g.add_argument("--decoder-layers", type=int, default=3, help="VAE: linear layers of the MLP decoder")
    g.add_argument("--strong-convexity", type=float, default=1.0, help="LIDVAE: α of both potentials")
    g.add_argument("--lift", choices=("learned", "identity", "linear"), default="learned",
                   help="LIDVAE: β, a learned map injective by construction (singular values ≥ "
                        "--min-singular-value), the fixed zero-padded identity, or an unconstrained Linear "
                        "(official code)")
    g.add_argument("--min-singular-value", type=float, default=1.5, help="LIDVAE: floor of the learned β")
    g.add_argument("--icnn-hidden", type=int, default=256, help="LIDVAE: width of ψ₁ and ψ₂")
    g.add_argument("--icnn-layers", type=int, default=2, help="LIDVAE: layers of ψ₁ and ψ₂")
    g.add_argument("--icnn-init-gain", type=float, default=12.0,
                   help="LIDVAE: scale of the ICNNs' initial input weights (curvature of ψ at the start)")
    g.add_argument("--anchor-recipe", action="store_true",
                   help="LIDVAE: the official code's choices, unconstrained learned β and α = 0")


def _add_train_args(p: argparse.ArgumentParser, reproduce: bool = False) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=500, help="passes over the data, at most")
    g.add_argument("--patience", type=int, default=100,
                   help="stop once the validation -ELBO has not improved by --min-improvement for this many "
                        "epochs (0: never)")
    g.add_argument("--min-improvement", type=float, default=0.01,
                   help="nats per point: a smaller gain in the validation -ELBO does not restart the patience "
                        "(it can still be the selected epoch)")
    g.add_argument("--batch-size", type=int, default=100, help="minibatch size")
    g.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    g.add_argument("--clip-grad", type=float, default=5.0, help="max gradient norm (0 disables)")
    g.add_argument("--val-every", type=int, default=10, help="epochs between validation evaluations")
    g.add_argument("--iw-samples", type=int, default=500, help="importance samples of the IW-LL")
    if not reproduce:
        g.add_argument("--seed", type=int, default=0, help="seed of the initialisation, shuffling and noise")
        g.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")


KEYS = ("latent_dim", "likelihood", "decoder_var", "learn_decoder_var", "prior", "components", "beta",
        "encoder_hidden", "encoder_layers", "decoder_hidden", "decoder_layers", "strong_convexity", "lift",
        "min_singular_value", "icnn_hidden", "icnn_layers", "icnn_init_gain", "anchor_recipe", "epochs", "patience",
        "min_improvement", "batch_size", "lr", "clip_grad", "val_every", "iw_samples")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    _add_data_args(p)
    _add_model_args(p)
    _add_train_args(p)


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    from ivae_ext.experiments.lidvae import DEFAULT_VARIANTS

    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="initialisation seeds")
    p.add_argument("--variants", nargs="+", choices=DEFAULT_VARIANTS, default=list(DEFAULT_VARIANTS),
                   help="which models to train")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once (one process and thread each)")
    p.add_argument("--data", default="digits", help="as for train (the claim is stated on digits)")
    _add_data_args(p, reproduce=True)
    _add_model_args(p)
    _add_train_args(p, reproduce=True)


def _config(args: argparse.Namespace, **extra):
    from ivae_ext.experiments.lidvae import ImageConfig

    return ImageConfig(**{k: getattr(args, k) for k in KEYS}, **extra)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ivae_ext.experiments.lidvae import run_image_train

    torch.set_num_threads(1)
    cfg = _config(args, model=args.model, data=args.data, seed=args.seed, limit=args.limit, progress=args.progress)
    m = run_image_train(cfg, args.out, resume=args.resume, log=lambda *_: None)
    print(f"{args.model}: AU {m['au']}/{cfg.latent_dim}, KL {m['kl']:.3f}, MI {m['mi']:.3f}, IW-LL {m['iw_ll']:.3f}, "
          f"-ELBO {m['neg_elbo']:.3f} (test; epoch {m['selected_epoch']} by validation -ELBO), "
          f"{m['train_time_s']:.0f} s; wrote {args.out}/metrics.json, curves.png, images.png")
    return 0


def run_reproduce(args: argparse.Namespace) -> int:
    from ivae_ext.experiments.lidvae import format_lidvae_table, reproduce_lidvae

    base = _config(args, data=args.data, progress=False)
    result = reproduce_lidvae(base, args.seeds, args.out, variants=args.variants, jobs=args.jobs,
                              resume=args.resume)
    print(format_lidvae_table(result))
    print(f"wrote {args.out}/table.md and table.json")
    return 0
