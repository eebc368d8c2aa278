"""The decomposition-VAE family of the command line: the α/β objective with structured priors.

``train --model decomp --data pinwheel|sprites|digits|digits32|PATH.npz``. The interface every family module
exposes is described in ivae_ext.cli.
"""

from __future__ import annotations

import argparse

NAME = "decomp"
TRAIN_MODELS = ("decomp",)
REPRODUCE_EXPERIMENTS = ("decomp",)
SUMMARY = "decomposition VAE (α/β objective, structured priors) on pinwheel, sprites, digits or an .npz"
TRAIN_HELP_HINT = "--model decomp --help"
MODEL_HELP = "the decomposition VAE (α/β objective; Gaussian, anisotropic, Student-t, sparse or mixture prior)"
TRAIN_HELP = "train one decomposition VAE and write metrics.json, curves.png, latents.png"
TRAIN_DESCRIPTION = (
    "Train a VAE on the objective E_q log p(x|z) − β KL(q(z|x) ‖ p(z)) − α D(q(z), p(z)) with a structured "
    "prior, on pinwheel data (clustering), procedural sprites (disentanglement), scikit-learn's digits "
    "(sparsity; 'digits32' upsampled for the DCGAN networks) or your .npz (x, optionally labels or factors, used only for scoring). The parameters "
    "reported are those of the best validation objective (every --val-every epochs). Writes "
    "OUT/metrics.json (recon, KL, IW log-likelihood, Hoyer sparsity; cluster_acc / NMI / ARI with labels "
    "and a mixture prior; disentanglement and MCC with factors), OUT/curves.png, OUT/latents.png (q(z) "
    "over the prior for 2-D latents, latent traversals otherwise) and OUT/model.pt."
)
REPRODUCE_HELP = "reproduce the decomposition VAE's clustering, sparsity and disentanglement experiments"
REPRODUCE_DESCRIPTION = (
    "Train the decomposition VAE on pinwheel data with a mixture prior ((β, α) = (1, 0), (0, 1), (1, 1)), on "
    "scikit-learn's digits upsampled to 32×32 with the sparse prior (γ = 0, 0.8; α = 0 and a sweep) and on procedural sprites "
    "with isotropic, anisotropic (fixed, learned) and Student-t priors, over several seeds; write "
    "OUT/table.md and OUT/table.json and every run's outputs under OUT/<experiment>/<setting>/seed<k>/."
)

KEYS = ("n", "data_seed", "prior", "alpha", "beta", "divergence", "gamma", "components", "df", "prior_variance",
        "learn_prior", "likelihood", "decoder_scale", "latent_dim", "arch", "hidden", "layers", "epochs", "batch_size", "lr",
        "val_every", "iw_samples")


def handles_train(model: str, data: str) -> bool:
    return model == "decomp"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from ivae_ext.experiments.decomp import ARCHS, PRIORS
    from ivae_ext.models.decomp import DIVERGENCES, LIKELIHOODS

    g = p.add_argument_group("data")
    g.add_argument("--data", default="pinwheel", help="'pinwheel', 'sprites', 'digits' (scikit-learn's 8×8), 'digits32' "
                   "(the same upsampled to 32×32 for the DCGAN networks), or PATH.npz with x [N, ...] and optionally "
                   "labels [N] or factors [N, K]")
    g.add_argument("--n", "--size", dest="n", type=int, default=None,
                   help="pinwheel: points per split (default 400, the anchor's); sprites: images (default 10000); "
                        "--size under torchrun, which takes --n for its own")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the generated data and of the split")
    g = p.add_argument_group("model")
    g.add_argument("--prior", choices=PRIORS, default="gaussian", help="p(z)")
    g.add_argument("--alpha", type=float, default=0.0, help="weight of D(q(z), p(z))")
    g.add_argument("--beta", type=float, default=1.0, help="weight of KL(q(z|x) ‖ p(z))")
    g.add_argument("--divergence", choices=DIVERGENCES, default="mmd",
                   help="D: IMQ-kernel MMD per dimension (the anchor's) or joint, KL(q(z) ‖ p(z)), or KL(p(z) ‖ q(z))")
    g.add_argument("--gamma", type=float, default=0.8, help="sparse prior: weight of the spike N(0, 0.05²)")
    g.add_argument("--components", type=int, default=4, help="gmm prior: components (means on the unit circle)")
    g.add_argument("--df", type=float, default=9.0, help="student-t prior: degrees of freedom")
    g.add_argument("--prior-variance", type=float, default=None,
                   help="total prior variance per dimension (default 0.03 on pinwheel, the anchor's, else 1)")
    g.add_argument("--learn-prior", action="store_true",
                   help="anisotropic: learn the variances (their total fixed); gmm: learn the means")
    g.add_argument("--likelihood", choices=LIKELIHOODS, default=None,
                   help="p(x|z) (default: gaussian with a learned scale on pinwheel, bernoulli on sprites, laplace on "
                        "digits, gaussian on .npz)")
    g.add_argument("--decoder-scale", type=float, default=0.1, help="fixed scale of a Gaussian / Laplace likelihood")
    g.add_argument("--latent-dim", type=int, default=None, help="default 2 (pinwheel), 10 (sprites, .npz), 50 (digits)")
    g.add_argument("--arch", choices=ARCHS, default=None,
                   help="networks: MLPs, or the anchor's DCGAN convolutions for 32×32 images (default conv on digits32, "
                        "else mlp)")
    g.add_argument("--hidden", type=int, default=None,
                   help="MLP width (default 100 on pinwheel, else 256); conv: first layer's channels (default 32)")
    g.add_argument("--layers", type=int, default=None, help="MLP hidden layers (default 1 on pinwheel, else 2)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=100, help="passes over the data")
    g.add_argument("--batch-size", type=int, default=100, help="minibatch size (>= 2: D is estimated from a batch)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--val-every", type=int, default=5, help="epochs between validation evaluations")
    g.add_argument("--iw-samples", type=int, default=100, help="importance samples of the test log-likelihood")
    g.add_argument("--seed", type=int, default=0, help="seed of the initialisation, shuffling and noise")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")


def run_train(args: argparse.Namespace) -> int:
    from ivae_ext.experiments.decomp import DecompConfig, run_decomp_train

    values = {k: getattr(args, k) for k in KEYS}
    if values["n"] is None:
        values["n"] = 400 if args.data == "pinwheel" else 10000
    cfg = DecompConfig(data=args.data, seed=args.seed, progress=args.progress, **values)
    m = run_decomp_train(cfg, args.out, resume=args.resume, log=lambda *_: None)
    extra = "".join(f", {k} {m[k]:.3f}" for k in ("cluster_acc", "nmi", "disentanglement", "mcc") if k in m)
    print(f"decomp: recon {m['recon']:.3f}, KL {m['kl']:.3f}, IW-LL {m['iw_ll']:.3f}, Hoyer {m['hoyer']:.3f}{extra} "
          f"(test; epoch {m['selected_epoch']} by the validation objective), {m['train_time_s']:.0f} s; wrote "
          f"{args.out}/metrics.json, curves.png, latents.png")
    return 0


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    from ivae_ext.experiments.decomp_reproduce import SETTINGS

    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (the data stay the same)")
    p.add_argument("--experiments", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS),
                   help="which experiments to run")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once (one process and thread each)")
    p.add_argument("--epochs", type=int, default=None, help="override every setting's epochs (for a quick look)")
    p.add_argument("--n", type=int, default=None, help="override the generated data's size (for a quick look)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs and continue unfinished ones in --out")


def run_reproduce(args: argparse.Namespace) -> int:
    from ivae_ext.experiments.decomp_reproduce import format_decomp_tables, reproduce_decomp

    overrides = {k: getattr(args, k) for k in ("epochs", "n") if getattr(args, k) is not None}
    result = reproduce_decomp(args.seeds, args.out, experiments=args.experiments, jobs=args.jobs, resume=args.resume,
                              overrides=overrides)
    print(format_decomp_tables(result))
    print(f"wrote {args.out}/table.md and table.json")
    return 0
