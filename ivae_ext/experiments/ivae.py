"""The iVAE family's experiments: one training run on synthetic nonlinear-ICA data or a user's .npz
(``run_train``) and the iVAE-vs-VAE reproduction (``reproduce_ivae``).

Every output file is written atomically (see ivae_ext.experiments.common).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ivae_ext.distributed import run_info
from ivae_ext.data import load_npz, make_nonlinear_ica
from ivae_ext.data.preprocess import fit_preprocessing
from ivae_ext.data.segments import segment_labels
from ivae_ext.experiments.common import (
    load_json,
    mean_std,
    plot_curves,
    save_state_dict_atomic,
    write_atomic,
    write_json,
    write_text,
)
from ivae_ext.metrics import mcc
from ivae_ext.models import IVAE, VAE
from ivae_ext.models.contrastive import contrastive_pretrain
from ivae_ext.models.unmixing import unmix_latents
from ivae_ext.training import evaluate_loss, fit


@dataclass
class TrainConfig:
    model: str = "ivae"
    data: str = "tcl"
    sources: int = 5
    segments: int = 40
    per_segment: int = 1000
    mixing_layers: int = 3
    mixing_activation: str = "xtanh"
    source_dist: str = "gauss"
    segment_means: bool = False
    reuse_mixing: bool = False
    seed: int = 0
    latent_dim: int | None = None
    objective: str = "elbo"
    prior: str | None = None
    prior_mean: str = "auto"  # "on" | "off" | "auto": on iff segment means (synthetic) or user data
    posterior_cov: str = "full"
    encoder_input: str = "xu"  # "xu" | "x": the iVAE encoder sees [x, u] or x alone
    weights: tuple = (100.0, 1.0, 0.0, 10.0)
    decoder_var: float = 0.01
    learn_decoder_var: bool = True
    beta: float = 1.0
    hidden: int = 50
    layers: int = 3
    activation: str = "lrelu"
    prior_layers: int | None = None  # None: 1 (a per-segment table) for one-hot u, else `layers`
    epochs: int = 40
    batch_size: int = 256
    lr: float = 3e-3
    schedule: str = "cosine"
    clip_grad: float = 10.0
    init_seed: int = 0
    restarts: int = 1
    preprocess: str = "whiten"  # "whiten" | "standardize" | "none": fitted on x before training
    unmix_epochs: str = "auto"  # "auto" (10,20 with one-hot u) | "none" | comma-separated epochs
    pretrain_epochs: str = "auto"  # "auto" (30 with one-hot u and a prior mean) | an int (0: none)
    progress: bool = True
    extra: dict = field(default_factory=dict)


def load_data(cfg: TrainConfig):
    if cfg.data == "tcl":
        return make_nonlinear_ica(
            n_sources=cfg.sources, n_segments=cfg.segments, per_segment=cfg.per_segment,
            mixing_layers=cfg.mixing_layers, activation=cfg.mixing_activation,
            source_dist=cfg.source_dist, segment_means=cfg.segment_means,
            reuse_matrix=cfg.reuse_mixing, seed=cfg.seed,
        )
    return load_npz(cfg.data)


def resolve_unmix_epochs(cfg: TrainConfig, labels: np.ndarray | None) -> list[int]:
    """The epochs after which ``unmix_latents`` runs (iVAE only; needs one-hot u)."""
    if cfg.model != "ivae" or cfg.unmix_epochs == "none":
        return []
    if cfg.unmix_epochs == "auto":
        return [e for e in (10, 20) if e < cfg.epochs] if labels is not None else []
    try:
        epochs = sorted({int(e) for e in cfg.unmix_epochs.split(",")})
    except ValueError:
        raise ValueError(f"unmix_epochs must be 'auto', 'none' or comma-separated epochs, got {cfg.unmix_epochs!r}")
    if not all(1 <= e <= cfg.epochs for e in epochs):
        raise ValueError(f"unmix_epochs must lie in 1..epochs={cfg.epochs}, got {cfg.unmix_epochs!r}")
    if labels is None:
        raise ValueError("unmix_epochs needs discrete segments: u must be one-hot (or labels in the .npz)")
    return epochs


def resolve_pretrain_epochs(cfg: TrainConfig, labels: np.ndarray | None) -> int:
    """Epochs of ``contrastive_pretrain`` before the ELBO training (iVAE only; needs one-hot u).

    auto: 30 when u is one-hot and the prior has a learned location, else 0 (with zero-mean
    segments the classifier only sees |z|; see ivae_ext.models.contrastive).
    """
    if cfg.model != "ivae":
        return 0
    if str(cfg.pretrain_epochs) == "auto":
        return 30 if labels is not None and resolve_prior_mean(cfg) else 0
    try:
        epochs = int(cfg.pretrain_epochs)
    except ValueError:
        raise ValueError(f"pretrain_epochs must be 'auto' or an integer >= 0, got {cfg.pretrain_epochs!r}")
    if epochs < 0:
        raise ValueError(f"pretrain_epochs must be 'auto' or an integer >= 0, got {cfg.pretrain_epochs!r}")
    if epochs and labels is None:
        raise ValueError("pretrain_epochs needs discrete segments: u must be one-hot (or labels in the .npz)")
    return epochs


def resolve_prior_mean(cfg: TrainConfig) -> bool:
    if cfg.prior_mean == "auto":
        return cfg.segment_means if cfg.data == "tcl" else True
    if cfg.prior_mean not in ("on", "off"):
        raise ValueError(f"prior_mean must be 'auto', 'on' or 'off', got {cfg.prior_mean!r}")
    return cfg.prior_mean == "on"


def build_model(cfg: TrainConfig, data_dim: int, aux_dim: int, latent_dim: int, one_hot_u: bool = True):
    if cfg.model == "vae":
        return VAE(data_dim, latent_dim, cfg.hidden, cfg.layers, cfg.decoder_var, cfg.learn_decoder_var, cfg.beta,
                   posterior_cov=cfg.posterior_cov, activation=cfg.activation)
    if cfg.model == "ivae":
        prior = cfg.prior or ("laplace" if cfg.source_dist == "laplace" and cfg.data == "tcl" else "gaussian")
        # a full covariance needs a Gaussian posterior (under a Laplace prior too: see gaussian_laplace_kl)
        posterior_cov = cfg.posterior_cov if cfg.objective == "elbo" else "diag"
        posterior = "gaussian" if cfg.objective == "weighted" or posterior_cov == "full" else None
        prior_mean = resolve_prior_mean(cfg)
        if cfg.encoder_input not in ("xu", "x"):
            raise ValueError(f"encoder_input must be 'xu' or 'x', got {cfg.encoder_input!r}")
        prior_layers = cfg.prior_layers or (1 if one_hot_u else cfg.layers)
        return IVAE(
            data_dim, latent_dim, aux_dim, cfg.hidden, cfg.layers, prior=prior, prior_mean=prior_mean,
            posterior=posterior, decoder_var=cfg.decoder_var, learn_decoder_var=cfg.learn_decoder_var,
            objective=cfg.objective, weights=tuple(cfg.weights), beta=cfg.beta,
            encoder_uses_u=cfg.encoder_input == "xu", posterior_cov=posterior_cov, activation=cfg.activation,
            prior_layers=prior_layers,
        )
    raise ValueError(f"model must be 'ivae' or 'vae', got {cfg.model!r}")


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, u: torch.Tensor) -> np.ndarray:
    return model.encode(x, u)[0].numpy()


def _plot_sources(path: str, s: np.ndarray, z: np.ndarray, matching: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = s.shape[1]
    idx = np.random.default_rng(0).choice(len(s), size=min(2000, len(s)), replace=False)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
    for j, ax in enumerate(axes[0]):
        k = matching[j]
        if k >= 0:
            ax.scatter(s[idx, j], z[idx, k], s=2, alpha=0.4)
            r = abs(np.corrcoef(s[:, j], z[:, k])[0, 1])
            ax.set_title(f"s{j} vs z{k}  |r|={r:.2f}", fontsize=9)
        ax.set_xlabel("true source")
    axes[0][0].set_ylabel("recovered (matched)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def run_train(cfg: TrainConfig, out: str, resume: bool = False, log=print) -> dict:
    """Train cfg.restarts models from different initialisations, keep the one with the lowest
    training objective, and write metrics.json, sources.png and curves.png into `out`."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # tiny activations otherwise run the small MLPs several times slower
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    data = load_data(cfg)
    preprocessing = fit_preprocessing(data.x, cfg.preprocess)
    x = torch.as_tensor(preprocessing(data.x))
    u = torch.as_tensor(data.u)
    labels = segment_labels(data.u)
    unmix_at = resolve_unmix_epochs(cfg, labels)
    pretrain_epochs = resolve_pretrain_epochs(cfg, labels)
    latent_dim = cfg.latent_dim or (data.s.shape[1] if data.s is not None else x.shape[1])
    runs = []
    for r in range(cfg.restarts):
        init_seed = cfg.init_seed + r
        torch.manual_seed(init_seed)
        model = build_model(cfg, x.shape[1], u.shape[1], latent_dim, one_hot_u=labels is not None)
        ckpt = os.path.join(out, f"checkpoint_restart{r}.pt")
        has_ckpt = resume and os.path.exists(ckpt)
        pretrain_record = os.path.join(out, f"pretraining_restart{r}.json")
        pretraining = None
        if pretrain_epochs and has_ckpt and os.path.exists(pretrain_record):
            pretraining = load_json(pretrain_record)  # the checkpoint already holds the pretrained-then-trained state
        elif pretrain_epochs and not has_ckpt:
            pretraining = contrastive_pretrain(model, x, u, epochs=pretrain_epochs, batch_size=cfg.batch_size,
                                               seed=init_seed, progress=cfg.progress)
            write_json(pretrain_record, pretraining)

        def track_mcc(epoch, m, record):
            changed = False
            if epoch in unmix_at:
                t0 = time.perf_counter()
                record["unmixing"] = unmix_latents(m, x, u, torch.as_tensor(labels), seed=init_seed)
                record["unmixing"]["seconds"] = time.perf_counter() - t0  # counted as training time
                changed = True
            if data.s is not None:
                record["mcc"] = mcc(posterior_means(m, x, u), data.s)[0]
            return changed

        history = fit(
            model, x, u if cfg.model == "ivae" else None, epochs=cfg.epochs, batch_size=cfg.batch_size,
            lr=cfg.lr, schedule=cfg.schedule, clip_grad=cfg.clip_grad, seed=init_seed, checkpoint=ckpt,
            resume=has_ckpt, progress=cfg.progress, on_epoch_end=track_mcc,
        )
        final = evaluate_loss(model, x, u if cfg.model == "ivae" else None)
        run = {"init_seed": init_seed, "final_loss_terms": final, "history": history, "model": model,
               "pretraining": pretraining}
        if data.s is not None:
            run["mcc"] = mcc(posterior_means(model, x, u), data.s)[0]
        runs.append(run)
        log(
            f"  {cfg.model} data seed {cfg.seed} restart {r}: objective {final['loss']:.4g}"
            + (f", MCC {run['mcc']:.3f}" if "mcc" in run else "")
        )
    best = min(runs, key=lambda run: run["final_loss_terms"]["loss"])  # selection by objective only
    z = posterior_means(best["model"], x, u)
    metrics = {
        "mcc": best.get("mcc"),
        "mcc_spearman": mcc(z, data.s, "spearman")[0] if data.s is not None else None,
        "selected_restart": runs.index(best),
        "final_loss_terms": best["final_loss_terms"],
        "restarts": [
            {"init_seed": r["init_seed"], "objective": r["final_loss_terms"]["loss"], "mcc": r.get("mcc")}
            for r in runs
        ],
        "history": best["history"]["epochs"],
        "pretraining": best["pretraining"],
        "train_time_s": sum(
            r["history"]["wall_time"] + sum(e.get("unmixing", {}).get("seconds", 0.0) for e in r["history"]["epochs"])
            + (r["pretraining"]["seconds"] if r["pretraining"] else 0.0)
            for r in runs
        ),
        "wall_time_s": time.perf_counter() - t_start,
        "n_samples": int(len(x)),
        "unmix_epochs": unmix_at,
        "pretrain_epochs": pretrain_epochs,
        "config": asdict(cfg),
        "model_config": best["model"].config(),
    }
    title = f"{cfg.model} on {os.path.basename(cfg.data)} (seed {cfg.seed})"
    if data.s is not None:
        _, matching = mcc(z, data.s)
        _plot_sources(os.path.join(out, "sources.png"), data.s, z, matching, title + f", MCC {metrics['mcc']:.3f}")
    plot_curves(os.path.join(out, "curves.png"), best["history"]["epochs"], title, metric_key="mcc",
                metric_label="MCC (not used for selection)", metric_ylim=(0, 1))
    save_state_dict_atomic(best["model"], os.path.join(out, "model.pt"))
    # the model reads preprocessed x: keep the map (x ↦ (x − mean) @ matrix) beside it
    write_atomic(os.path.join(out, "preprocessing.npz"), lambda tmp: np.savez(tmp, **preprocessing.as_arrays()))
    metrics.update(run_info())  # world_size and backend ("none" alone)
    write_json(os.path.join(out, "metrics.json"), metrics)
    return metrics


def reproduce_ivae(base: TrainConfig, seeds, out: str, vae_overrides: dict, resume: bool = False, log=print) -> dict:
    """iVAE and the VAE baseline on each data seed; writes table.md and table.json into `out`."""
    t0 = time.perf_counter()
    rows = []
    for seed in seeds:
        row = {"seed": seed}
        for name in ("ivae", "vae"):
            cfg = TrainConfig(**{**asdict(base), "model": name, "seed": seed})
            if name == "vae":
                for k, v in vae_overrides.items():
                    setattr(cfg, k, v)
            run_dir = os.path.join(out, f"seed{seed}", name)
            done = os.path.join(run_dir, "metrics.json")
            if resume and os.path.exists(done):
                metrics = load_json(done)
                log(f"  {name} data seed {seed}: done before, MCC {metrics['mcc']:.3f}")
            else:
                metrics = run_train(cfg, run_dir, resume=resume, log=log)
            row[name] = metrics["mcc"]
            row[f"{name}_time_s"] = metrics["train_time_s"]
            row[f"{name}_restarts"] = metrics.get("restarts", [])
        rows.append(row)
        log(f"data seed {seed}: iVAE {row['ivae']:.3f}  VAE {row['vae']:.3f}")
    summary = {}
    for name in ("ivae", "vae"):
        mean, std = mean_std([r[name] for r in rows])
        summary[name] = {"mean": mean, "std": std}
    summary["ivae_beats_vae_every_seed"] = all(r["ivae"] > r["vae"] for r in rows)
    summary["restart_objective_vs_mcc"] = restart_report([r.get("ivae_restarts", []) for r in rows])
    result = {
        "rows": rows, "summary": summary, "wall_time_s": time.perf_counter() - t0,
        "config": asdict(base), "vae_overrides": vae_overrides,
    }
    table = format_table(result)
    write_json(os.path.join(out, "table.json"), result)
    write_text(os.path.join(out, "table.md"), table + "\n")
    return result


def restart_report(per_seed: list) -> dict | None:
    """How well the training objective tracks the MCC across restarts (reported, never used to select).

    per_seed: for each data seed, the list of {"objective", "mcc"} of its restarts. Returns the
    Spearman correlation between objective and MCC pooled within seeds (each seed's values ranked
    separately), the mean MCC of the restart the objective selected, of a random restart and of the
    best-MCC restart (an oracle, for reference only), or None without restarts.
    """
    from scipy.stats import rankdata

    ranks_obj, ranks_mcc, selected, average, oracle = [], [], [], [], []
    for restarts in per_seed:
        restarts = [r for r in restarts if r.get("mcc") is not None]
        if len(restarts) < 2:
            continue
        obj = np.array([r["objective"] for r in restarts])
        m = np.array([r["mcc"] for r in restarts])
        ranks_obj.extend(rankdata(obj) - rankdata(obj).mean())
        ranks_mcc.extend(rankdata(m) - rankdata(m).mean())
        selected.append(m[np.argmin(obj)])
        average.append(m.mean())
        oracle.append(m.max())
    if not selected:
        return None
    a, b = np.asarray(ranks_obj), np.asarray(ranks_mcc)
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return {
        "spearman_objective_mcc_within_seed": float((a * b).sum() / denom) if denom > 0 else None,
        "mcc_selected_by_objective": float(np.mean(selected)),
        "mcc_mean_over_restarts": float(np.mean(average)),
        "mcc_best_restart_oracle": float(np.mean(oracle)),
    }


def format_table(result: dict) -> str:
    lines = ["| data seed | iVAE MCC | VAE MCC |", "|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['seed']} | {r['ivae']:.3f} | {r['vae']:.3f} |")
    s = result["summary"]
    lines.append(
        f"| mean ± std | {s['ivae']['mean']:.3f} ± {s['ivae']['std']:.3f} | "
        f"{s['vae']['mean']:.3f} ± {s['vae']['std']:.3f} |"
    )
    return "\n".join(lines)
