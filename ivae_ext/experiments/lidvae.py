"""The LIDVAE family: one training run on image-like data (``run_image_train``) and the collapse
comparison ``reproduce lidvae`` (VAE, β-VAE, LIDVAE with the official recipe, LIDVAE, ablations).

Model selection is by the validation objective only: a fixed 10% of the training split is held
out, the negative ELBO on it is evaluated every ``val_every`` epochs (and at the last), the
parameters of the best evaluation are the ones reported, and training stops once ``patience``
epochs have passed without a better one (at most ``epochs``). Every metric is computed on the test
split. Files are written atomically; ``resume`` continues an interrupted run bit for bit.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ivae_ext.distributed import run_info
from ivae_ext.data.images import ImageData, load_image_data
from ivae_ext.experiments.common import (SelectionByValidation, check_int_fields, check_min_improvement,
                                         finished_or_run, mean_std, plot_curves, run_in_processes,
                                         save_state_dict_atomic, write_atomic, write_json, write_text)
from ivae_ext.metrics import active_units, decoder_sensitivity, iw_log_likelihood, kl_per_latent, mutual_information
from ivae_ext.models.latent_vae import MLPVAE
from ivae_ext.models.lidvae import LIDVAE
from ivae_ext.training import evaluate_loss, fit

MODELS = ("lidvae", "vae")


@dataclass
class ImageConfig:
    """Everything one ``train --model lidvae|vae`` run depends on (recorded in metrics.json)."""

    model: str = "lidvae"  # "lidvae" | "vae" (the MLP decoder; beta != 1 makes it the β-VAE)
    data: str = "digits"  # "digits" | "idx:DIR" | PATH.npz
    latent_dim: int = 16
    seed: int = 0
    likelihood: str = "auto"  # "auto" (bernoulli for 0/1 data, else gaussian) | "bernoulli" | "gaussian"
    decoder_var: float = 0.1
    learn_decoder_var: bool = False
    prior: str = "gaussian"  # "gaussian" | "gmm"
    components: int = 10
    beta: float = 1.0
    encoder_hidden: int = 512
    encoder_layers: int = 3
    decoder_hidden: int = 512  # the MLP decoder (vae)
    decoder_layers: int = 3
    strong_convexity: float = 1.0  # LIDVAE: α of ψ₁ and ψ₂
    lift: str = "learned"  # LIDVAE: "learned" | "identity" | "linear"
    min_singular_value: float = 1.5
    icnn_hidden: int = 256
    icnn_layers: int = 2
    icnn_init_gain: float = 12.0
    anchor_recipe: bool = False
    epochs: int = 500  # at most; training stops earlier once the validation −ELBO stops improving
    patience: int = 100  # epochs without a better validation −ELBO before stopping (0: never stop early)
    min_improvement: float = 0.01  # nats: a smaller gain does not reset the patience (it may still be selected)
    batch_size: int = 100
    lr: float = 3e-3
    clip_grad: float = 5.0
    val_fraction: float = 0.1
    val_every: int = 10
    iw_samples: int = 500
    limit: int | None = None  # IDX: read at most this many images per split
    progress: bool = True

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        check_int_fields(self, ("latent_dim", "epochs", "batch_size", "val_every", "iw_samples"), 1)
        check_int_fields(self, ("patience",), 0)
        check_min_improvement(self.min_improvement)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction!r}")
        if self.likelihood not in ("auto", "bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'auto', 'bernoulli' or 'gaussian', got {self.likelihood!r}")


def resolve_likelihood(cfg: ImageConfig, data: ImageData) -> str:
    """The configured likelihood, or the data's own (Bernoulli for 0/1 data) for "auto"."""
    return data.likelihood if cfg.likelihood == "auto" else cfg.likelihood


def build_image_model(cfg: ImageConfig, data_dim: int, likelihood: str):
    common = {"likelihood": likelihood, "decoder_var": cfg.decoder_var, "learn_decoder_var": cfg.learn_decoder_var,
              "prior": cfg.prior, "components": cfg.components, "encoder_hidden": cfg.encoder_hidden,
              "encoder_layers": cfg.encoder_layers, "beta": cfg.beta}
    if cfg.model == "vae":
        return MLPVAE(data_dim, cfg.latent_dim, decoder_hidden=cfg.decoder_hidden, decoder_layers=cfg.decoder_layers,
                      **common)
    return LIDVAE(data_dim, cfg.latent_dim, strong_convexity=cfg.strong_convexity, lift=cfg.lift,
                  min_singular_value=cfg.min_singular_value, icnn_hidden_latent=cfg.icnn_hidden,
                  icnn_hidden_data=cfg.icnn_hidden, icnn_layers=cfg.icnn_layers, init_gain=cfg.icnn_init_gain,
                  anchor_recipe=cfg.anchor_recipe, **common)


def validation_split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices) of a training split of n points: a fixed random
    `fraction` (at least 1 point) is held out; the same for every model and seed."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise ValueError(f"the training split has {n} points: too few to hold out a validation set")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@torch.no_grad()
def evaluate_image_model(model, x: torch.Tensor, iw_samples: int = 500, seed: int = 0) -> dict:
    """The collapse metrics of `model` on x (the test split): AU (Var of the posterior mean ≥ 0.01)
    with the per-latent variances, KL (mean analytic KL of the objective, and per latent against
    N(0, 1) for the Gaussian prior), MI over the whole set, IW-LL with `iw_samples` draws,
    −ELBO (β = 1), and the decoder's sensitivity ‖∂ decode/∂z_j‖ at the posterior means."""
    model.eval()
    au = active_units(model, x)
    q_loc, q_log_scale = model.encode(x)
    terms = evaluate_loss(model, x, batch_size=500, seed=seed)
    out = {
        "au": au.count,
        "au_variances": au.variances.tolist(),
        "kl": terms["kl"],
        "neg_elbo": terms["recon"] + terms["kl"],
        "recon": terms["recon"],
        "mi": float(mutual_information((q_loc, q_log_scale), generator=torch.Generator().manual_seed(seed))),
        "iw_ll": float(iw_log_likelihood(model.log_likelihood, x, q_loc, q_log_scale, samples=iw_samples,
                                         log_prior=model.log_prior, generator=torch.Generator().manual_seed(seed))),
        "iw_samples": iw_samples,
        "sensitivity": decoder_sensitivity(model.decode, q_loc).tolist(),
    }
    if model.prior == "gaussian":
        out["kl_per_latent"] = kl_per_latent((q_loc, q_log_scale)).tolist()
    return out


def _plot_images(path: str, model, x: torch.Tensor, shape, title: str, n: int = 10, seed: int = 0) -> None:
    """Rows: test images, their reconstructions (mean at the posterior mean), samples from the prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            xs = x[:n]
            recon = model.mean(model.encode(xs)[0])
            samples = model.sample(n)[0]
    finally:
        torch.random.set_rng_state(state)
    rows = [("data", xs), ("reconstruction", recon), ("sample", samples)]
    side = shape or (1, x.shape[1])
    fig, axes = plt.subplots(3, len(xs), figsize=(1.0 * len(xs), 3.4), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(len(xs)):
            ax = axes[r][c]
            ax.imshow(images[c].reshape(side).numpy(), cmap="gray_r", vmin=0, vmax=max(1.0, float(images.max())))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def run_image_train(cfg: ImageConfig, out: str, resume: bool = False, log=print, data: ImageData | None = None) -> dict:
    """Train one model, select its parameters by the validation −ELBO, and write into `out`:
    metrics.json (test metrics, selection, wall time, config), curves.png, images.png,
    model.pt (the selected parameters) and the checkpoints that --resume reads."""
    torch.set_flush_denormal(True)
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    data = data if data is not None else load_image_data(cfg.data, limit=cfg.limit)
    likelihood = resolve_likelihood(cfg, data)
    if likelihood == "bernoulli":
        from ivae_ext.data.images import check_bernoulli_data

        check_bernoulli_data(data.x_train, "the training images")
    fit_idx, val_idx = validation_split(data.n_train, cfg.val_fraction)
    x_fit, x_val, x_test = data.x_train[fit_idx], data.x_train[val_idx], data.x_test
    torch.manual_seed(cfg.seed)
    model = build_image_model(cfg, data.dim, likelihood)
    ckpt = os.path.join(out, "checkpoint.pt")
    has_ckpt = resume and os.path.exists(ckpt)
    best = SelectionByValidation(out, cfg.patience, cfg.min_improvement, resume=has_ckpt)

    def validate(epoch, m, record):
        if epoch % cfg.val_every and epoch != cfg.epochs:
            return False
        terms = evaluate_loss(m, x_val, batch_size=500, seed=0)
        m.train()
        record["val_neg_elbo"] = terms["recon"] + terms["kl"]  # β = 1: the ELBO, whatever β trains
        if best.update(epoch, m, record["val_neg_elbo"]):
            record["stop"] = True  # early stopping on the validation objective
        return False

    history = fit(model, x_fit, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, schedule="none",
                  clip_grad=cfg.clip_grad, seed=cfg.seed, checkpoint=ckpt, resume=has_ckpt, progress=cfg.progress,
                  on_epoch_end=validate, checkpoint_every=cfg.val_every)
    train_time = history["wall_time"]
    epochs_trained = history["epochs"][-1]["epoch"] if history["epochs"] else 0
    model.load_state_dict(best.state)
    metrics = evaluate_image_model(model, x_test, cfg.iw_samples)
    metrics.update({
        "model": cfg.model,
        "selected_epoch": best.stopping.best_epoch,
        "epochs_trained": epochs_trained,
        "val_neg_elbo": best.stopping.best_value,
        "train_time_s": train_time,
        "wall_time_s": time.perf_counter() - t_start,
        "n_fit": len(x_fit), "n_val": len(x_val), "n_test": len(x_test),
        "likelihood": likelihood,
        "config": asdict(cfg),
        "model_config": model.config(),
        "history": history["epochs"],
    })
    name = cfg.model + (" (official recipe)" if cfg.model == "lidvae" and cfg.anchor_recipe else "")
    title = f"{name} on {os.path.basename(str(cfg.data))}, seed {cfg.seed}"
    plot_curves(os.path.join(out, "curves.png"), history["epochs"], title,
                extra_series={"validation −ELBO": "val_neg_elbo"})
    _plot_images(os.path.join(out, "images.png"), model, x_test, data.image_shape,
                 f"{title}: AU {metrics['au']}/{cfg.latent_dim}, IW-LL {metrics['iw_ll']:.2f}")
    save_state_dict_atomic(model, os.path.join(out, "model.pt"))
    metrics.update(run_info())  # world_size and backend ("none" alone)
    write_json(os.path.join(out, "metrics.json"), metrics)
    log(f"  {name} seed {cfg.seed}: AU {metrics['au']}/{cfg.latent_dim}, KL {metrics['kl']:.2f}, MI "
        f"{metrics['mi']:.2f}, IW-LL {metrics['iw_ll']:.2f}, -ELBO {metrics['neg_elbo']:.2f} (epoch "
        f"{best.stopping.best_epoch}, {train_time:.0f} s)")
    return metrics


# -- the reproduction -------------------------------------------------------------------------

# name: (label, what it tests, overrides of the base config)
VARIANTS = {
    "vae": ("VAE (MLP decoder)", "baseline", {"model": "vae"}),
    "beta_vae": ("β-VAE (β = 0.2)", "baseline: a smaller KL weight, the official β-VAE setting",
                 {"model": "vae", "beta": 0.2}),
    "lidvae_anchor": ("LIDVAE, official recipe", "learned unconstrained β (Linear + bias), α = 0",
                      {"model": "lidvae", "anchor_recipe": True}),
    "lidvae": ("LIDVAE", "learned injective β (s ≥ 1.5), α = 1", {"model": "lidvae"}),
    "lidvae_identity": ("LIDVAE, identity β", "the paper's fixed zero-padded identity β, α = 1",
                        {"model": "lidvae", "lift": "identity"}),
    "lidvae_alpha0": ("ablation: LIDVAE, α = 0", "learned injective β, no strong convexity",
                      {"model": "lidvae", "strong_convexity": 0.0}),
    "lidvae_linear": ("ablation: LIDVAE, unconstrained β", "learned Linear β (may lose rank), α = 1",
                      {"model": "lidvae", "lift": "linear"}),
}
DEFAULT_VARIANTS = tuple(VARIANTS)
METRICS = ("au", "kl", "mi", "iw_ll", "neg_elbo")


def _run_job(job) -> dict:
    """One (variant, seed) run in a worker process (one thread: the runs are the parallelism)."""
    cfg_dict, out, resume = job
    return finished_or_run(out, resume, lambda: run_image_train(ImageConfig(**cfg_dict), out, resume=resume,
                                                                log=lambda *_: None))


def reproduce_lidvae(base: ImageConfig, seeds, out: str, variants=DEFAULT_VARIANTS, jobs: int = 2,
                     resume: bool = False, log=print) -> dict:
    """Every variant on every seed (runs spread over `jobs` processes); writes table.md and
    table.json (per-seed metrics, mean ± std, the claim checks) into `out`."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    t0 = time.perf_counter()
    base_dict = {**asdict(base), "progress": False}
    valid = {f.name for f in fields(ImageConfig)}
    jobs_list = []
    # the slowest models first, so the cheap baselines fill the workers' gaps at the end
    order = sorted(variants, key=lambda v: (VARIANTS[v][2].get("model") != "lidvae", list(variants).index(v)))
    for variant in order:
        for seed in seeds:
            cfg = {**base_dict, **VARIANTS[variant][2], "seed": seed}
            assert set(cfg) <= valid
            jobs_list.append(((variant, seed), (cfg, os.path.join(out, variant, f"seed{seed}"), resume)))
    results = run_in_processes(_run_job, jobs_list, jobs, lambda key, metrics: _log_run(log, key, metrics))
    rows = {}
    for variant in variants:
        per_seed = [results[(variant, s)] for s in seeds]
        summary = {m: dict(zip(("mean", "std"), mean_std([r[m] for r in per_seed]))) for m in METRICS}
        rows[variant] = {
            "label": VARIANTS[variant][0], "what": VARIANTS[variant][1],
            "per_seed": [{"seed": s, **{m: r[m] for m in METRICS}, "selected_epoch": r["selected_epoch"],
                          "train_time_s": r["train_time_s"], "au_variances": r["au_variances"],
                          "sensitivity": r["sensitivity"]} for s, r in zip(seeds, per_seed)],
            "summary": summary,
            "train_time_s": sum(r["train_time_s"] for r in per_seed),
        }
    result = {"rows": rows, "seeds": list(seeds), "latent_dim": base.latent_dim, "config": asdict(base),
              "wall_time_s": time.perf_counter() - t0, "jobs": jobs, "claim": claim_checks(rows, base.latent_dim)}
    write_json(os.path.join(out, "table.json"), result)
    write_text(os.path.join(out, "table.md"), format_lidvae_table(result) + "\n")
    return result


def _log_run(log, key, metrics) -> None:
    variant, seed = key
    log(f"  {VARIANTS[variant][0]} seed {seed}: AU {metrics['au']}, KL {metrics['kl']:.2f}, MI {metrics['mi']:.2f}, "
        f"IW-LL {metrics['iw_ll']:.2f}, -ELBO {metrics['neg_elbo']:.2f} (epoch {metrics['selected_epoch']}, "
        f"{metrics['train_time_s']:.0f} s)")


def claim_checks(rows: dict, latent_dim: int) -> dict:
    """The issue's claim: LIDVAE keeps ≥ latent_dim − 1 units active on every seed while its mean
    IW-LL is within 3% of the VAE's (relative to |IW-LL of the VAE|). None where a row is missing."""
    checks: dict = {}
    if "lidvae" in rows:
        aus = [r["au"] for r in rows["lidvae"]["per_seed"]]
        checks["lidvae_min_au"] = min(aus)
        checks["lidvae_au_at_least_d_minus_1_every_seed"] = min(aus) >= latent_dim - 1
    if "lidvae" in rows and "vae" in rows:
        lid, vae = rows["lidvae"]["summary"]["iw_ll"]["mean"], rows["vae"]["summary"]["iw_ll"]["mean"]
        gap = (vae - lid) / abs(vae)
        checks["iw_ll_gap_relative_to_vae"] = gap
        checks["iw_ll_within_3_percent"] = gap <= 0.03
    return checks


def format_lidvae_table(result: dict) -> str:
    d = result["latent_dim"]
    lines = [f"| model | AU (/{d}) per seed | AU | KL | MI | IW-LL | −ELBO | what |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in result["rows"].values():
        s = row["summary"]
        cells = [f"{s[m]['mean']:.2f} ± {s[m]['std']:.2f}" for m in METRICS]
        per_seed = ", ".join(str(r["au"]) for r in row["per_seed"])
        lines.append(f"| {row['label']} | {per_seed} | " + " | ".join(cells) + f" | {row['what']} |")
    c = result["claim"]
    if "iw_ll_gap_relative_to_vae" in c:
        lines.append("")
        lines.append(f"LIDVAE: min AU over seeds {c['lidvae_min_au']}/{d} (claim ≥ {d - 1}: "
                     f"{c['lidvae_au_at_least_d_minus_1_every_seed']}); IW-LL {100 * c['iw_ll_gap_relative_to_vae']:.1f}% "
                     f"below the VAE's (claim ≤ 3%: {c['iw_ll_within_3_percent']}). Seeds {result['seeds']}, "
                     f"{result['wall_time_s']:.0f} s with {result['jobs']} processes.")
    return "\n".join(lines)
