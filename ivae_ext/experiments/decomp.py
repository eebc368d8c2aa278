"""Decomposition VAE experiments: one training run (``run_decomp_train``).

A run trains on the training split, evaluates the α/β objective (the training loss) on the
validation split every ``val_every`` epochs and keeps the parameters of the best evaluation; every
reported metric is computed on the test split with those parameters. Labels and factors are used
only for scoring, never for training or selection.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ivae_ext.distributed import run_info
from ivae_ext.data.ima import split_three
from ivae_ext.distributions import AnisotropicPrior, GaussianMixturePrior, SpikeAndSlab, circle_means
from ivae_ext.experiments.common import (SelectionByValidation, check_int_fields, plot_curves, save_state_dict_atomic,
                                         write_atomic, write_json)
from ivae_ext.metrics.decomp import clustering_scores, disentanglement_score, hoyer_sparsity
from ivae_ext.metrics.likelihood import iw_log_likelihood
from ivae_ext.metrics.mcc import mcc
from ivae_ext.models.dcgan import SIDE, DCGANDecoder, DCGANEncoder
from ivae_ext.models.decomp import DIVERGENCES, LIKELIHOODS, DecompVAE, MLPDecoder, MLPEncoder
from ivae_ext.training import evaluate_loss, fit

DATASETS = ("pinwheel", "sprites", "digits", "digits32")
ARCHS = ("mlp", "conv")
CONV_WIDTH = 32  # the anchor's DCGAN base width
PRIORS = ("gaussian", "anisotropic", "student-t", "sparse", "gmm")
# per dataset: likelihood, latent dim, architecture, hidden width, hidden layers, learned decoder scale (the
# anchor's choices where it has them: pinwheel 2→100→2 with a learned Gaussian scale; images with fixed-scale
# Laplace / Bernoulli; its DCGAN networks for the 32 × 32 sparsity images). "hidden" and "layers" are the MLP's;
# the DCGAN networks' first layer has CONV_WIDTH channels unless `hidden` says otherwise.
DATA_DEFAULTS = {
    "pinwheel": {"likelihood": "gaussian", "latent_dim": 2, "arch": "mlp", "hidden": 100, "layers": 1,
                 "learn_decoder_scale": True},
    "sprites": {"likelihood": "bernoulli", "latent_dim": 10, "arch": "mlp", "hidden": 256, "layers": 2,
                "learn_decoder_scale": False},
    "digits": {"likelihood": "laplace", "latent_dim": 50, "arch": "mlp", "hidden": 256, "layers": 2,
               "learn_decoder_scale": False},
    "digits32": {"likelihood": "laplace", "latent_dim": 50, "arch": "conv", "hidden": 256, "layers": 2,
                 "learn_decoder_scale": False},
    "npz": {"likelihood": "gaussian", "latent_dim": 10, "arch": "mlp", "hidden": 256, "layers": 2,
            "learn_decoder_scale": False},
}


@dataclass
class DecompConfig:
    """Everything one ``train --model decomp`` run depends on (recorded in metrics.json)."""

    data: str = "pinwheel"  # "pinwheel" | "sprites" | "digits" | "digits32" | PATH.npz (x, optional labels / factors)
    n: int = 10000  # sprites: images drawn (split 70/20/10); pinwheel: points per split (the anchor: 400)
    data_seed: int = 0
    prior: str = "gaussian"
    alpha: float = 0.0
    beta: float = 1.0
    divergence: str = "mmd"
    gamma: float = 0.8  # sparse prior: spike weight
    components: int = 4  # gmm prior: components (means on a circle)
    df: float = 9.0  # student-t prior
    prior_variance: float | None = None  # total prior variance per dimension (default 0.03 for pinwheel, else 1)
    learn_prior: bool = False  # anisotropic: learn the variances (total fixed); gmm: learn the means
    likelihood: str | None = None  # default per dataset (DATA_DEFAULTS)
    decoder_scale: float = 0.1  # fixed scale of a Gaussian/Laplace likelihood without a learned scale
    latent_dim: int | None = None
    arch: str | None = None  # "mlp" | "conv" (DCGAN, 32 × 32 images); default per dataset
    hidden: int | None = None  # MLP width; conv: channels of the first layer
    layers: int | None = None
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    val_every: int = 5
    iw_samples: int = 100
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        check_int_fields(self, ("n", "components", "epochs", "batch_size", "val_every", "iw_samples"), 1)
        for name in ("latent_dim", "hidden", "layers"):
            if getattr(self, name) is not None:
                check_int_fields(self, (name,), 1)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (q(z) is estimated from a batch), got {self.batch_size}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")
        if self.arch is not None and self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.likelihood is not None and self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("lr", "df", "decoder_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (0 <= self.gamma <= 1):
            raise ValueError(f"gamma (the spike weight) must be in [0, 1], got {self.gamma!r}")
        if self.prior_variance is not None and not (0 < self.prior_variance < math.inf):
            raise ValueError(f"prior_variance must be a finite number > 0, got {self.prior_variance!r}")
        if self.data not in DATASETS and not os.fspath(self.data).lower().endswith(".npz"):
            raise ValueError(f"data must be one of {DATASETS} or a PATH.npz, got {self.data!r}")

    @property
    def kind(self) -> str:
        return self.data if self.data in DATASETS else "npz"

    def resolved(self, name: str):
        value = getattr(self, name)
        return DATA_DEFAULTS[self.kind][name] if value is None else value


@dataclass
class DecompData:
    x_train: torch.Tensor
    x_val: torch.Tensor
    x_test: torch.Tensor
    labels_test: np.ndarray | None
    factors_test: np.ndarray | None
    sample_fixed_factor: object  # (factor, n, rng) -> x, or None
    n_factors: int
    name: str


def _split(x, labels, factors, seed, name, sampler=None, n_factors=0) -> DecompData:
    tr, va, te = split_three(len(x), seed)
    return DecompData(x[tr], x[va], x[te], None if labels is None else np.asarray(labels)[te],
                      None if factors is None else np.asarray(factors)[te], sampler, n_factors, name)


def load_decomp_data(cfg: DecompConfig) -> DecompData:
    if cfg.data == "pinwheel":
        from ivae_ext.data.pinwheel import make_pinwheel

        d = make_pinwheel(n_train=cfg.n, n_val=cfg.n, n_test=cfg.n, seed=cfg.data_seed)
        return DecompData(d.x_train, d.x_val, d.x_test, d.y_test.numpy(), None, None, 0, d.name)
    if cfg.data == "sprites":
        from ivae_ext.data.sprites import make_sprites

        d = make_sprites(n=cfg.n, seed=cfg.data_seed)
        x = d.images.reshape(len(d.images), -1)

        def sampler(factor, n, rng):
            return d.sample_fixed_factor(factor, n, rng).reshape(n, -1)

        return _split(x, None, d.factors.numpy(), cfg.data_seed, d.name, sampler, len(d.factor_names))
    if cfg.data in ("digits", "digits32"):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.as_tensor(digits.data / 16.0, dtype=torch.float32)
        if cfg.data == "digits32":
            # the anchor's sparsity proxy: bilinear upsampling to the DCGAN networks' 32 × 32
            x = torch.nn.functional.interpolate(x.reshape(-1, 1, 8, 8), size=(32, 32), mode="bilinear",
                                                align_corners=False).reshape(len(x), -1)
            return _split(x, digits.target, None, cfg.data_seed, "digits (8×8 upsampled to 32×32, scikit-learn)")
        return _split(x, digits.target, None, cfg.data_seed, "digits (8×8, scikit-learn)")
    from ivae_ext.data.labelled import load_labelled_npz

    d = load_labelled_npz(os.fspath(cfg.data))
    x = d.x.reshape(len(d.x), -1).float()
    return _split(x, None if d.labels is None else d.labels.numpy(), None if d.factors is None else d.factors.numpy(),
                  cfg.data_seed, d.name)


def build_prior(cfg: DecompConfig, latent_dim: int):
    total = cfg.prior_variance if cfg.prior_variance is not None else (0.03 if cfg.data == "pinwheel" else 1.0)
    if cfg.prior == "gaussian":
        return AnisotropicPrior(latent_dim, variance_scale=total, learn=False)  # equal variances: isotropic
    if cfg.prior == "anisotropic":
        # fixed: variances falling geometrically over the dimensions (total fixed); learned: start equal
        variances = None if cfg.learn_prior else torch.logspace(0, -2, latent_dim)
        return AnisotropicPrior(latent_dim, variance_scale=total, variances=variances, learn=cfg.learn_prior)
    if cfg.prior == "student-t":
        return AnisotropicPrior(latent_dim, family="student-t", variance_scale=total, df=cfg.df)
    if cfg.prior == "sparse":
        return SpikeAndSlab(latent_dim, gamma=cfg.gamma, slab_scale=math.sqrt(total))
    if latent_dim != 2:
        means = torch.zeros(cfg.components, latent_dim)
        means[:, :2] = circle_means(cfg.components)
    else:
        means = circle_means(cfg.components)
    return GaussianMixturePrior(means, scale=math.sqrt(total), learn_means=cfg.learn_prior)


def build_decomp_model(cfg: DecompConfig, data: DecompData) -> DecompVAE:
    latent_dim, hidden, layers = (cfg.resolved(k) for k in ("latent_dim", "hidden", "layers"))
    likelihood = cfg.resolved("likelihood")
    learn_scale = DATA_DEFAULTS[cfg.kind]["learn_decoder_scale"] and likelihood != "bernoulli"
    data_dim = data.x_train.shape[1]
    if cfg.resolved("arch") == "conv":
        if data_dim != SIDE * SIDE or learn_scale:
            raise ValueError(f"arch 'conv' (the DCGAN networks) needs 32 × 32 single-channel images ({SIDE * SIDE} "
                             f"values per row) and a fixed-scale likelihood, got {data_dim} values per row")
        width = CONV_WIDTH if cfg.hidden is None else cfg.hidden
        encoder, decoder = DCGANEncoder(latent_dim, width=width), DCGANDecoder(latent_dim, width=width)
    else:
        encoder = MLPEncoder(data_dim, latent_dim, hidden=hidden, layers=layers)
        decoder = MLPDecoder(latent_dim, (data_dim,), hidden=hidden, layers=layers, learn_scale=learn_scale)
    return DecompVAE(encoder, decoder, latent_dim, build_prior(cfg, latent_dim), likelihood=likelihood,
                     decoder_scale=cfg.decoder_scale, alpha=cfg.alpha, beta=cfg.beta, divergence=cfg.divergence)


@torch.no_grad()
def evaluate_decomp_model(model: DecompVAE, data: DecompData, cfg: DecompConfig) -> dict:
    model.eval()
    x = data.x_test
    terms = evaluate_loss(model, x, batch_size=max(2, len(x)), seed=cfg.seed)
    loc, scale = model.encode(x)
    prior = model.prior()
    gen = torch.Generator().manual_seed(cfg.seed)
    iw = iw_log_likelihood(model.log_likelihood, x, loc, scale.log(), samples=cfg.iw_samples,
                           log_prior=prior.log_prob, generator=gen)
    out = {"objective": terms["loss"], "recon": terms["recon"], "kl": terms["kl"], "iw_ll": float(iw),
           "hoyer": hoyer_sparsity(loc), "latent_std": scale.mean().item()}
    if "reg" in terms:
        out["reg"] = terms["reg"]
    if data.labels_test is not None and cfg.prior == "gmm":
        scores = clustering_scores(loc, data.labels_test, prior)
        out.update(cluster_acc=scores.accuracy, nmi=scores.nmi, ari=scores.ari)
    if data.factors_test is not None:
        out["mcc"] = mcc(loc, torch.as_tensor(data.factors_test, dtype=loc.dtype))[0]
        if data.sample_fixed_factor is not None:
            # in units of the prior's scale, so that pruning collapsed latents (std over the data below
            # a threshold) means the same under an anisotropic prior as under an isotropic one
            unit = prior.stddev if torch.isfinite(prior.stddev).all() else torch.ones_like(loc[0])
            score = disentanglement_score(lambda v: model.encode(v)[0] / unit, data.sample_fixed_factor,
                                          data.n_factors, loc / unit, seed=cfg.seed)
            out.update(disentanglement=score.score, disentanglement_train_votes=score.train_accuracy)
    return out


def _plot_latents(path: str, model: DecompVAE, data: DecompData, title: str) -> None:
    """2-D latents: the density of q(z) (the mixture of the test posteriors) over the prior's
    contours; otherwise latent traversals of the decoder mean (images when square)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        loc, scale = model.encode(data.x_test)
        prior = model.prior()
        if model.latent_dim == 2:
            grid = torch.linspace(-2, 2, 120)
            gz = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).reshape(-1, 2)
            from ivae_ext import reference

            log_qz = reference.aggregate_log_q(gz, loc, scale.log())[0].reshape(120, 120)
            log_pz = prior.log_prob(gz).reshape(120, 120)
            fig, ax = plt.subplots(figsize=(4, 4))
            ax.imshow(log_qz.exp().numpy(), extent=(-2, 2, -2, 2), origin="lower", cmap="viridis")
            ax.contour(grid.numpy(), grid.numpy(), log_pz.exp().numpy(), levels=5, colors="white", linewidths=0.6)
            ax.set_title(f"q(z) (image) and p(z) (contours)\n{title}", fontsize=8)
        else:
            side = math.isqrt(data.x_train.shape[1])
            base = loc[:1].repeat(7, 1)
            dims = min(model.latent_dim, 10)
            fig, axes = plt.subplots(dims, 7, figsize=(7, dims), squeeze=False)
            for k in range(dims):
                z = base.clone()
                z[:, k] = torch.linspace(-2, 2, 7) * prior.stddev[k] if hasattr(prior, "stddev") else torch.linspace(-2, 2, 7)
                mean = model.mean(z)
                for j in range(7):
                    ax = axes[k][j]
                    if side * side == mean.shape[1]:
                        ax.imshow(mean[j].reshape(side, side).numpy(), cmap="gray", vmin=0, vmax=1)
                    else:
                        ax.plot(mean[j].numpy())
                    ax.axis("off")
            fig.suptitle(f"latent traversals (±2 prior std), {title}", fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def run_decomp_train(cfg: DecompConfig, out: str, resume: bool = False, log=print,
                     data: DecompData | None = None) -> dict:
    """Train one DecompVAE, select it by the validation objective, evaluate on the test split and
    write metrics.json, curves.png, latents.png and model.pt into `out`."""
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    data = data if data is not None else load_decomp_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_decomp_model(cfg, data)
    ckpt = os.path.join(out, "checkpoint.pt")
    has_ckpt = resume and os.path.exists(ckpt)
    best = SelectionByValidation(out, 0, 0.0, resume=has_ckpt)

    def validate(epoch, m, record):
        if epoch % cfg.val_every and epoch != cfg.epochs:
            return False
        terms = evaluate_loss(m, data.x_val, batch_size=cfg.batch_size, seed=0)
        m.train()
        record["val_objective"] = terms["loss"]
        best.update(epoch, m, record["val_objective"])
        return False

    history = fit(model, data.x_train, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, schedule="none",
                  clip_grad=None, seed=cfg.seed, checkpoint=ckpt, resume=has_ckpt, progress=cfg.progress,
                  on_epoch_end=validate, checkpoint_every=cfg.val_every)
    model.load_state_dict(best.state)
    metrics = evaluate_decomp_model(model, data, cfg)
    # the selected model's validation terms: what a choice between settings (e.g. of α) may look at
    val_terms = evaluate_loss(model, data.x_val, batch_size=cfg.batch_size, seed=0)
    metrics.update({
        "val_recon": val_terms["recon"], "val_kl": val_terms["kl"],
        "selected_epoch": best.stopping.best_epoch, "val_objective": best.stopping.best_value,
        "train_time_s": history["wall_time"], "wall_time_s": time.perf_counter() - t_start,
        "data": data.name, "n_train": len(data.x_train), "n_val": len(data.x_val), "n_test": len(data.x_test),
        "config": asdict(cfg), "model_config": model.config(), "history": history["epochs"],
    })
    title = f"{data.name}, {cfg.prior} prior, α {cfg.alpha:g}, β {cfg.beta:g}, seed {cfg.seed}"
    plot_curves(os.path.join(out, "curves.png"), history["epochs"], title,
                extra_series={"validation objective": "val_objective"})
    _plot_latents(os.path.join(out, "latents.png"), model, data, title)
    save_state_dict_atomic(model, os.path.join(out, "model.pt"))
    metrics.update(run_info())  # world_size and backend ("none" alone)
    write_json(os.path.join(out, "metrics.json"), metrics)
    log(f"  DecompVAE on {title}: recon {metrics['recon']:.3f}, IW-LL {metrics['iw_ll']:.3f}, Hoyer "
        f"{metrics['hoyer']:.3f} (epoch {metrics['selected_epoch']}, {metrics['train_time_s']:.0f} s)")
    return metrics
