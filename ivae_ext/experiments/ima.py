"""IMA-VAE experiments: one training run (``run_ima_train``) and the decoder-variance sweep of the
paper (``reproduce_ima``).

A run trains on the training split (70%), evaluates the negative ELBO on the validation split
(20%) every ``val_every`` epochs, keeps the parameters of the best one and stops once it has not
improved by ``min_improvement`` for ``patience`` epochs (the anchor's rule: every 5 epochs,
patience 25). Every reported metric is computed on the test split (10%) with the selected
parameters only; the true sources never take part in training or selection.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ivae_ext.distributed import run_info
from ivae_ext.data.ima import IMAData, load_ima_data
from ivae_ext.data.mixing import MIXINGS, SOURCE_DISTRIBUTIONS, source_log_density
from ivae_ext.experiments.common import (SelectionByValidation, check_int_fields, check_min_improvement,
                                         finished_or_run, mean_std, plot_curves, run_in_processes,
                                         save_state_dict_atomic, write_atomic, write_json, write_text)
from ivae_ext.metrics.ima import cima, global_cima, log_volume
from ivae_ext.metrics.mcc import mcc
from ivae_ext.models.imavae import PRIORS, IMAVAE
from ivae_ext.training import evaluate_loss, fit


DATA_SEED_NOTE = """The Möbius data's scale and nonlinearity depend on how close the pole a falls to the
source cube, i.e. on the data seed: per-dimension variance 0.026 (seed 0), 0.0084 (1), 0.012 (2),
0.0013 (5). The anchor's paper data (its seed 1 under scipy < 1.10 and jax 0.2) has ≈ 0.0025, a
far pole. Our generator draws a different stream, so the default data seed is the first of 0–9
whose variance is within a factor of 2 of the anchor's: 5 (chosen on the data's variance only,
before any model was trained on it). Rows with data seeds 0 and 1 show what a nearer pole does."""


@dataclass
class IMAConfig:
    """Everything one ``train --model ima`` run depends on (recorded in metrics.json)."""

    data: str = "moebius"  # "moebius" | "moebius_linear" | "mlp" | PATH.npz (x [N, D], optional s [N, n])
    n_sources: int = 3  # generated data: n = D
    n: int = 60000  # generated data: points (split 70/20/10)
    sources: str = "uniform"  # generated data: "uniform" (U[-0.5, 0.5]) | "gaussian" | "laplace"
    data_seed: int = 5  # the data (sources, mixing, split); `seed` is the model's. 5: see DATA_SEED_NOTE
    mlp_weights: str = "orthogonal"  # MLP mixing: "orthogonal" | "uniform" (U(1, 3))
    seed: int = 0
    prior: str = "uniform"
    decoder_var: float = 1e-4  # absolute decoder variance γ⁻² ...
    decoder_var_relative: float | None = None  # ... or this times the training x's mean per-dimension variance
    anneal_epochs: int = 0  # γ annealing: the decoder variance starts at anneal_factor × the target and
    anneal_factor: float = 1000.0  # shrinks geometrically to it over these epochs (0: no annealing)
    hidden_dim: int | None = None  # default 10 · n_sources
    encoder_hidden_dim: int | None = None  # default hidden_dim
    n_layers: int = 2
    activation: str = "lrelu"  # of encoder and decoder: see ivae_ext.models.nets.ACTIVATIONS
    lr: float = 3e-3
    schedule: str = "cosine"  # "cosine" (to 0 over `epochs`) | "none" (the anchor's constant lr)
    batch_size: int = 256
    epochs: int = 300  # at most
    val_every: int = 5
    patience: int = 0  # epochs without a gain > min_improvement in the validation −ELBO (0: never stop)
    min_improvement: float = 0.0
    progress: bool = True

    def __post_init__(self):
        check_int_fields(self, ("n_sources", "n", "n_layers", "batch_size", "epochs", "val_every"), 1)
        check_int_fields(self, ("patience", "anneal_epochs"), 0)
        if self.anneal_epochs >= self.epochs:
            raise ValueError(f"anneal_epochs ({self.anneal_epochs}) must be below epochs ({self.epochs}): the "
                             "model is selected at the target decoder variance")
        if not (isinstance(self.anneal_factor, (int, float)) and 1 <= self.anneal_factor < float("inf")):
            raise ValueError(f"anneal_factor must be a finite number >= 1, got {self.anneal_factor!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.schedule not in ("none", "cosine"):
            raise ValueError(f"schedule must be 'none' or 'cosine', got {self.schedule!r}")
        if self.sources not in SOURCE_DISTRIBUTIONS:
            raise ValueError(f"sources must be one of {SOURCE_DISTRIBUTIONS}, got {self.sources!r}")
        for name in ("decoder_var", "decoder_var_relative", "lr"):
            value = getattr(self, name)
            if value is None and name == "decoder_var_relative":
                continue
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        check_min_improvement(self.min_improvement)
        spec = os.fspath(self.data)
        if spec not in MIXINGS and not spec.lower().endswith(".npz"):
            raise ValueError(f"data must be one of {MIXINGS} or a PATH.npz, got {spec!r}")


def load_config_data(cfg: IMAConfig) -> IMAData:
    return load_ima_data(cfg.data, n_sources=cfg.n_sources, n=cfg.n, sources=cfg.sources, seed=cfg.data_seed,
                         mlp_weights=cfg.mlp_weights)


def resolve_decoder_var(cfg: IMAConfig, data: IMAData) -> float:
    """The absolute decoder variance: decoder_var, or decoder_var_relative × the data's variance."""
    if cfg.decoder_var_relative is not None:
        return cfg.decoder_var_relative * data.data_variance()
    return cfg.decoder_var


def build_ima_model(cfg: IMAConfig, data: IMAData) -> IMAVAE:
    latent_dim = data.n_sources or cfg.n_sources
    if latent_dim > data.data_dim:
        raise ValueError(f"n_sources ({latent_dim}) must not exceed the data's dimension ({data.data_dim})")
    return IMAVAE(data.data_dim, latent_dim, decoder_var=resolve_decoder_var(cfg, data), prior=cfg.prior,
                  hidden_dim=cfg.hidden_dim, encoder_hidden_dim=cfg.encoder_hidden_dim, n_layers=cfg.n_layers,
                  activation=cfg.activation)


def annealed_decoder_var(epoch: int, cfg: IMAConfig, target: float) -> float:
    """The decoder variance for the epoch after `epoch` (0: the first): anneal_factor × target,
    shrinking geometrically to the target at epoch anneal_epochs and staying there."""
    if not cfg.anneal_epochs or epoch >= cfg.anneal_epochs:
        return target
    return target * cfg.anneal_factor ** (1.0 - epoch / cfg.anneal_epochs)


def _float64_copy(model: IMAVAE) -> IMAVAE:
    return copy.deepcopy(model).double().eval()


@torch.no_grad()
def _kl_per_latent(model: IMAVAE, x: torch.Tensor, draws: int = 64, seed: int = 0) -> torch.Tensor:
    """Mean over x of KL(q(z_k|x) ‖ p(z_k)) per latent [n] (the uniform prior's expectation over
    `draws` posterior samples per point)."""
    loc, log_scale = model.encode(x)
    if model.prior != "uniform":
        return model.kl_per_latent(loc, log_scale).mean(0)
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(model.latent_dim, dtype=torch.float64)
    for _ in range(draws):
        y = loc + torch.exp(log_scale) * torch.randn(loc.shape, generator=gen, dtype=loc.dtype)
        total += model.kl_per_latent(loc, log_scale, y).double().mean(0)
    return total / draws


@torch.no_grad()
def evaluate_ima_model(model: IMAVAE, data: IMAData, seed: int = 0) -> dict:
    """Test-split metrics: −ELBO, KL per latent, MCC on posterior means (Pearson, Spearman) and on
    posterior samples (whole split, and the anchor's mean over 64-point batches), the learned
    decoder's mean pointwise c_IMA at the posterior means, the true mixing's c_IMA at the true
    sources, and the self-consistency errors."""
    model.eval()
    x, s = data.x_test, data.s_test
    terms = evaluate_loss(model, x, batch_size=4096, seed=seed)
    kl = _kl_per_latent(model, x, seed=seed)
    z_mean = model.latent_mean(x)
    data_var = data.data_variance()
    m64 = _float64_copy(model)
    x64, z64 = x.double(), z_mean.double()
    recon_x = m64.decode(m64.latent_mean(x64))
    recon_z = m64.latent_mean(m64.decode(z64))
    with torch.enable_grad():
        cima_mean, cima_values = global_cima(m64.decode, z64)
    out = {
        "neg_elbo": terms["recon"] + terms["kl"], "recon": terms["recon"],
        "kl": float(kl.sum()), "kl_per_latent": kl.tolist(),
        "cima": cima_mean, "cima_median": float(cima_values.median()),
        "self_consistency_x": float(((x64 - recon_x) ** 2).mean()),
        "self_consistency_x_relative": float(((x64 - recon_x) ** 2).mean()) / data_var,
        "self_consistency_z": float(((z64 - recon_z) ** 2).mean()),
        "data_variance": data_var, "decoder_var": model.decoder_var,
        "decoder_var_relative": model.decoder_var / data_var,
    }
    if s is not None:
        score, matching = mcc(z_mean, s)
        out.update(mcc=score, matching=matching.tolist(), mcc_spearman=mcc(z_mean, s, "spearman")[0])
        gen = torch.Generator().manual_seed(seed)
        loc, log_scale = model.encode(x)
        z_sample = model.to_latent(loc + torch.exp(log_scale) * torch.randn(loc.shape, generator=gen))
        out["mcc_samples"] = mcc(z_sample, s)[0]
        batches = [mcc(z_sample[i:i + 64], s[i:i + 64])[0] for i in range(0, len(s) - 63, 64)]
        out["mcc_samples_batch64"] = float(np.mean(batches)) if batches else None
    if data.mixing is not None:
        true_jacobians = data.mixing.jacobian(s.double())
        out["cima_true"] = float(cima(true_jacobians).mean())
        # −log p(x) of the true model: the −ELBO of any model is above it on average (up to noise);
        # their difference bounds the sum of c_IMA and the other gaps of the learned model
        out["neg_log_lik_true"] = float((log_volume(true_jacobians)
                                         - source_log_density(s, data.source_distribution)).mean())
        out["elbo_gap_to_true"] = out["neg_elbo"] - out["neg_log_lik_true"]
    return out


def _plot_sources(path: str, model: IMAVAE, data: IMAData, metrics: dict, title: str, n: int = 2000) -> None:
    """True source j against the latent matched to it (posterior means, test split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        z = model.latent_mean(data.x_test[:n]).numpy()
    s = data.s_test[:n].numpy()
    k = s.shape[1]
    fig, axes = plt.subplots(1, k, figsize=(2.6 * k, 2.6), squeeze=False)
    for j in range(k):
        ax = axes[0][j]
        i = metrics["matching"][j]
        if i >= 0:
            ax.scatter(s[:, j], z[:, i], s=2, alpha=0.4)
        ax.set_xlabel(f"true source {j + 1}")
        ax.set_ylabel(f"latent {i + 1}" if i >= 0 else "unmatched")
    fig.suptitle(f"{title}: MCC {metrics['mcc']:.3f}, c_IMA {metrics['cima']:.2g}", fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def run_ima_train(cfg: IMAConfig, out: str, resume: bool = False, log=print, data: IMAData | None = None) -> dict:
    """Train one IMA-VAE, select it by the validation −ELBO, evaluate on the test split, and write
    metrics.json, curves.png, sources.png (when the sources are known), model.pt and the
    checkpoints that --resume reads into `out`."""
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    data = data if data is not None else load_config_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_ima_model(cfg, data)
    target_var = model.decoder_var
    if cfg.anneal_epochs:
        model.set_decoder_var(annealed_decoder_var(0, cfg, target_var))
    ckpt = os.path.join(out, "checkpoint.pt")
    has_ckpt = resume and os.path.exists(ckpt)
    best = SelectionByValidation(out, cfg.patience, cfg.min_improvement, resume=has_ckpt)

    def validate(epoch, m, record):
        if cfg.anneal_epochs:
            record["decoder_var"] = m.decoder_var
            m.set_decoder_var(annealed_decoder_var(epoch, cfg, target_var))
        # selection only at the target variance (the ELBO of another variance is another objective)
        if epoch % cfg.val_every and epoch != cfg.epochs or epoch < cfg.anneal_epochs:
            return False
        terms = evaluate_loss(m, data.x_val, batch_size=4096, seed=0)
        m.train()
        record["val_neg_elbo"] = terms["recon"] + terms["kl"]
        if best.update(epoch, m, record["val_neg_elbo"]):
            record["stop"] = True
        return False

    history = fit(model, data.x_train, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, schedule=cfg.schedule,
                  clip_grad=None, seed=cfg.seed, checkpoint=ckpt, resume=has_ckpt, progress=cfg.progress,
                  on_epoch_end=validate, checkpoint_every=cfg.val_every)
    model.load_state_dict(best.state)
    metrics = evaluate_ima_model(model, data)
    metrics.update({
        "selected_epoch": best.stopping.best_epoch,
        "epochs_trained": history["epochs"][-1]["epoch"] if history["epochs"] else 0,
        "val_neg_elbo": best.stopping.best_value,
        "train_time_s": history["wall_time"],
        "wall_time_s": time.perf_counter() - t_start,
        "data": data.name, "n_train": len(data.x_train), "n_val": len(data.x_val), "n_test": len(data.x_test),
        "config": asdict(cfg), "model_config": model.config(), "history": history["epochs"],
    })
    title = f"IMA-VAE on {data.name}, decoder var {model.decoder_var:.2g}, seed {cfg.seed}"
    plot_curves(os.path.join(out, "curves.png"), history["epochs"], title,
                extra_series={"validation −ELBO": "val_neg_elbo"})
    if "mcc" in metrics:
        _plot_sources(os.path.join(out, "sources.png"), model, data, metrics, title)
    save_state_dict_atomic(model, os.path.join(out, "model.pt"))
    metrics.update(run_info())  # world_size and backend ("none" alone)
    write_json(os.path.join(out, "metrics.json"), metrics)
    log(f"  {title}: MCC {metrics.get('mcc', float('nan')):.3f}, c_IMA {metrics['cima']:.2g}, KL "
        f"{metrics['kl']:.3f} (epoch {metrics['selected_epoch']}, {metrics['train_time_s']:.0f} s)")
    return metrics


# -- the reproduction -------------------------------------------------------------------------

SWEEP_VARIANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
OTHER_RELATIVE_VARIANCE = 0.01  # the MLP and Möbius + linear rows: 1% of their data's variance
ANNEAL_EPOCHS, ANNEAL_FACTOR = 100, 1000.0


def reproduce_settings() -> dict:
    """name -> (label, config overrides): the Möbius decoder-variance sweep (absolute variances,
    the anchor's grid) and one MLP and one Möbius + linear-map row (variance relative to their
    data, whose scale differs from the Möbius data's)."""
    settings = {f"moebius_{v:g}": (f"Möbius, decoder var {v:g}", {"data": "moebius", "decoder_var": v, "decoder_var_relative": None})
                for v in SWEEP_VARIANCES}
    for v in (1e-4, 1e-5):  # the issue's optional γ annealing, reported beside the plain runs
        settings[f"moebius_{v:g}_annealed"] = (
            f"Möbius, decoder var {v:g}, γ annealing ({ANNEAL_FACTOR:g}× → 1× over {ANNEAL_EPOCHS} epochs)",
            {"data": "moebius", "decoder_var": v, "decoder_var_relative": None, "anneal_epochs": ANNEAL_EPOCHS,
             "anneal_factor": ANNEAL_FACTOR})
    for v in (1e-4, 1e-5):  # smooth networks: lower c_IMA, but a worse validation −ELBO (docs/IMA.md)
        settings[f"moebius_{v:g}_silu"] = (
            f"Möbius, decoder var {v:g}, SiLU networks",
            {"data": "moebius", "decoder_var": v, "decoder_var_relative": None, "activation": "silu"})
    for data_seed in (0, 1):
        settings[f"moebius_1e-04_data{data_seed}"] = (
            f"Möbius, data seed {data_seed}, decoder var 1e-4",
            {"data": "moebius", "data_seed": data_seed, "decoder_var": 1e-4, "decoder_var_relative": None})
    for kind, label in (("mlp", "MLP mixing"), ("moebius_linear", "Möbius + linear map")):
        settings[kind] = (f"{label}, decoder var {OTHER_RELATIVE_VARIANCE:g} × data var",
                          {"data": kind, "decoder_var_relative": OTHER_RELATIVE_VARIANCE})
    return settings


SETTINGS = reproduce_settings()
METRICS = ("mcc", "mcc_spearman", "mcc_samples", "cima", "cima_true", "kl", "neg_elbo", "neg_log_lik_true",
           "elbo_gap_to_true", "self_consistency_x_relative", "self_consistency_z")
CLAIM_ROW_SUFFIXES = ("", "_annealed", "_silu")


def _run_job(job) -> dict:
    cfg_dict, out, resume = job
    return finished_or_run(out, resume, lambda: run_ima_train(IMAConfig(**cfg_dict), out, resume=resume,
                                                              log=lambda *_: None))


def reproduce_ima(base: IMAConfig, seeds, out: str, settings=tuple(SETTINGS), jobs: int = 2, resume: bool = False,
                  log=print) -> dict:
    """Every setting on every seed (the model's seed; the data are the same for all), spread over
    `jobs` processes; writes table.md and table.json into `out`."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    t0 = time.perf_counter()
    base_dict = {**asdict(base), "progress": False}
    valid = {f.name for f in fields(IMAConfig)}
    work = []
    for name in reversed(settings):  # the small variances train longest: first
        for seed in seeds:
            cfg = {**base_dict, **SETTINGS[name][1], "seed": seed}
            assert set(cfg) <= valid
            work.append(((name, seed), (cfg, os.path.join(out, name, f"seed{seed}"), resume)))

    def report(key, metrics):
        name, seed = key
        log(f"  {SETTINGS[name][0]}, seed {seed}: MCC {metrics.get('mcc', float('nan')):.3f}, c_IMA "
            f"{metrics['cima']:.2g}, KL {metrics['kl']:.3f} (epoch {metrics['selected_epoch']}, "
            f"{metrics['train_time_s']:.0f} s)")

    results = run_in_processes(_run_job, work, jobs, report)
    rows = {}
    for name in settings:
        per_seed = [results[(name, s)] for s in seeds]
        present = [m for m in METRICS if all(r.get(m) is not None for r in per_seed)]
        rows[name] = {
            "label": SETTINGS[name][0],
            "decoder_var": [r["decoder_var"] for r in per_seed][0],
            "decoder_var_relative": [r["decoder_var_relative"] for r in per_seed][0],
            "per_seed": [{"seed": s, **{m: r.get(m) for m in METRICS}, "kl_per_latent": r["kl_per_latent"],
                          "selected_epoch": r["selected_epoch"], "val_neg_elbo": r["val_neg_elbo"],
                          "cima_median": r["cima_median"], "train_time_s": r["train_time_s"],
                          "wall_time_s": r["wall_time_s"]} for s, r in zip(seeds, per_seed)],
            "summary": {m: dict(zip(("mean", "std"), mean_std([r[m] for r in per_seed]))) for m in present},
            "max_run_wall_time_s": max(r["wall_time_s"] for r in per_seed),
        }
    result = {"rows": rows, "seeds": list(seeds), "config": asdict(base), "wall_time_s": time.perf_counter() - t0,
              "jobs": jobs, "claim": ima_claim_checks(rows, base.n_sources)}
    write_json(os.path.join(out, "table.json"), result)
    write_text(os.path.join(out, "table.md"), format_ima_table(result) + "\n")
    return result


def ima_claim_checks(rows: dict, n_sources: int) -> dict:
    """The issue's claim on Möbius data: MCC ≥ 0.95 and mean pointwise c_IMA ≤ 0.01 on every seed
    at decoder variance 1e-4 and 1e-5 (checked for the plain, the annealed and the SiLU rows);
    collapse at 1e-1 (KL below 0.1 nats per latent, every seed)."""
    checks: dict = {}
    for name in (f"moebius_{v:g}{suffix}" for suffix in CLAIM_ROW_SUFFIXES for v in (1e-4, 1e-5)):
        if name in rows:
            seeds = rows[name]["per_seed"]
            checks[f"{name}_min_mcc"] = min(r["mcc"] for r in seeds)
            checks[f"{name}_max_cima"] = max(r["cima"] for r in seeds)
            checks[f"{name}_recovers"] = checks[f"{name}_min_mcc"] >= 0.95 and checks[f"{name}_max_cima"] <= 0.01
    if "moebius_0.1" in rows:
        worst = max(max(r["kl_per_latent"]) for r in rows["moebius_0.1"]["per_seed"])
        checks["moebius_0.1_max_kl_per_latent"] = worst
        checks["moebius_0.1_collapses"] = worst < 0.1
    return checks


def format_ima_table(result: dict) -> str:
    lines = ["| setting | decoder var (× data var) | MCC (means) | MCC Spearman | MCC (samples) | c_IMA learned | "
             "c_IMA true | KL (nats) | −ELBO | −ELBO − (−log p(x)) | self-cons. x (× data var) | epoch |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(summary, m, fmt):
        if m not in summary:
            return "—"
        return f"{summary[m]['mean']:{fmt}} ± {summary[m]['std']:{fmt}}"

    for row in result["rows"].values():
        s = row["summary"]
        epochs = ", ".join(str(r["selected_epoch"]) for r in row["per_seed"])
        lines.append(
            f"| {row['label']} | {row['decoder_var']:.2g} ({row['decoder_var_relative']:.2g}) | {cell(s, 'mcc', '.3f')} | "
            f"{cell(s, 'mcc_spearman', '.3f')} | {cell(s, 'mcc_samples', '.3f')} | {cell(s, 'cima', '.2g')} | "
            f"{cell(s, 'cima_true', '.2g')} | {cell(s, 'kl', '.3f')} | {cell(s, 'neg_elbo', '.3f')} | "
            f"{cell(s, 'elbo_gap_to_true', '.3f')} | {cell(s, 'self_consistency_x_relative', '.2g')} | {epochs} |")
    c = result["claim"]
    lines.append("")
    parts = []
    for key in (f"moebius_{v:g}{suffix}" for suffix in CLAIM_ROW_SUFFIXES for v in (1e-4, 1e-5)):
        if f"{key}_recovers" in c:
            parts.append(f"{result['rows'][key]['label']}: min MCC {c[key + '_min_mcc']:.3f}, max c_IMA "
                         f"{c[key + '_max_cima']:.2g} (claim MCC ≥ 0.95 and c_IMA ≤ 0.01: {c[key + '_recovers']})")
    if "moebius_0.1_collapses" in c:
        parts.append(f"decoder var 0.1: max KL per latent {c['moebius_0.1_max_kl_per_latent']:.3f} nats "
                     f"(claim < 0.1, collapse: {c['moebius_0.1_collapses']})")
    lines.append("; ".join(parts) + f". Seeds {result['seeds']}, {result['wall_time_s']:.0f} s with "
                 f"{result['jobs']} processes.")
    lines += ["", "Per seed: MCC (means) / mean pointwise c_IMA / selected validation −ELBO; the longest run's wall time.", "",
              "| setting | " + " | ".join(f"seed {s}" for s in result["seeds"]) + " | longest run |",
              "|---|" + "---|" * len(result["seeds"]) + "---:|"]
    for row in result["rows"].values():
        cells = [f"{r['mcc']:.3f} / {r['cima']:.3g} / {r['val_neg_elbo']:.3f}" if r.get("mcc") is not None
                 else f"— / {r['cima']:.3g} / {r['val_neg_elbo']:.3f}" for r in row["per_seed"]]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {row['max_run_wall_time_s']:.0f} s |")
    return "\n".join(lines)
