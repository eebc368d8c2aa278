"""The LIDVAE family's runner and command line: files written, selection by validation, resume,
dispatch of `train --model vae` by data, the reproduction table, and errors for bad data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from ivae_ext.cli import main, train_family
from ivae_ext.cli import ivae as ivae_family
from ivae_ext.cli import lidvae as lidvae_family
from ivae_ext.experiments.lidvae import (
    VARIANTS,
    ImageConfig,
    claim_checks,
    format_lidvae_table,
    reproduce_lidvae,
    run_image_train,
    validation_split,
)

TINY = {"latent_dim": 3, "encoder_hidden": 16, "decoder_hidden": 16, "icnn_hidden": 8, "epochs": 4, "val_every": 2,
        "iw_samples": 7, "progress": False, "patience": 0}


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def binary_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "bin.npz"
    np.savez(path, x=(rng.random((60, 10)) > 0.5).astype(np.float32))
    return str(path)


def _quiet(*_):
    pass


def test_validation_split_is_fixed_and_disjoint():
    fit_a, val_a = validation_split(100, 0.1)
    fit_b, val_b = validation_split(100, 0.1)
    assert np.array_equal(val_a, val_b) and len(val_a) == 10 and len(fit_a) == 90
    assert not set(fit_a) & set(val_a) and set(fit_a) | set(val_a) == set(range(100))
    with pytest.raises(ValueError, match="too few to hold out"):
        validation_split(1, 0.5)


@pytest.mark.parametrize("model", ["lidvae", "vae"])
def test_train_writes_metrics_and_pictures(tmp_path, binary_npz, model):
    cfg = ImageConfig(model=model, data=binary_npz, **TINY)
    m = run_image_train(cfg, str(tmp_path), log=_quiet)
    for name in ("metrics.json", "curves.png", "images.png", "model.pt", "checkpoint.pt", "best.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("au", "kl", "mi", "iw_ll", "neg_elbo", "train_time_s", "wall_time_s", "config", "au_variances",
                "sensitivity", "selected_epoch", "val_neg_elbo"):
        assert key in on_disk, key
    assert len(on_disk["au_variances"]) == len(on_disk["sensitivity"]) == 3
    assert on_disk["au"] == sum(v >= 0.01 for v in on_disk["au_variances"])
    assert on_disk["iw_ll"] <= 0 and on_disk["neg_elbo"] > 0 and on_disk["kl"] >= 0
    # IW-LL is a tighter bound than the ELBO (both on the test split, up to Monte-Carlo noise)
    assert on_disk["iw_ll"] >= -on_disk["neg_elbo"] - 0.5
    # selection by the validation objective: the reported epoch holds the smallest validation −ELBO
    vals = {r["epoch"]: r["val_neg_elbo"] for r in on_disk["history"] if "val_neg_elbo" in r}
    assert sorted(vals) == [2, 4]
    assert on_disk["selected_epoch"] == min(vals, key=vals.get)
    assert on_disk["config"]["model"] == model and m["au"] == on_disk["au"]


def test_resume_continues_bit_for_bit(tmp_path, binary_npz):
    full = run_image_train(ImageConfig(model="lidvae", data=binary_npz, **TINY), str(tmp_path / "a"), log=_quiet)
    part = {**TINY, "epochs": 2}
    run_image_train(ImageConfig(model="lidvae", data=binary_npz, **part), str(tmp_path / "b"), log=_quiet)
    resumed = run_image_train(ImageConfig(model="lidvae", data=binary_npz, **TINY), str(tmp_path / "b"),
                              resume=True, log=_quiet)
    a = torch.load(tmp_path / "a" / "model.pt")
    b = torch.load(tmp_path / "b" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("au", "kl", "mi", "iw_ll", "neg_elbo", "selected_epoch", "val_neg_elbo"):
        assert full[key] == resumed[key], key


def test_cli_train_lidvae_and_vae_dispatch(tmp_path, binary_npz, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "lidvae", "--data", binary_npz, "--latent-dim", "3", "--encoder-hidden", "16",
            "--icnn-hidden", "8", "--epochs", "2", "--val-every", "1", "--iw-samples", "5", "--no-progress",
            "--out", str(out)]
    assert main(args) == 0
    assert "AU" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["config"]["icnn_hidden"] == 8
    # `vae` on image data is the image family's MLP-decoder VAE; on ICA data (tcl, .npz with u) the iVAE family's
    assert train_family("vae", "digits") is lidvae_family
    assert train_family("vae", "idx:/somewhere") is lidvae_family
    assert train_family("vae", binary_npz) is lidvae_family
    with_u = tmp_path / "ica.npz"
    np.savez(with_u, x=np.zeros((4, 2)), u=np.zeros(4))
    assert train_family("vae", str(with_u)) is ivae_family
    assert train_family("vae", "tcl") is ivae_family
    assert train_family("lidvae", "tcl") is lidvae_family


def test_cli_bad_data_errors(tmp_path):
    grey = tmp_path / "grey.npz"
    np.savez(grey, x=np.full((30, 4), 0.3, dtype=np.float32))
    base = ["train", "--model", "lidvae", "--epochs", "1", "--no-progress", "--latent-dim", "2",
            "--encoder-hidden", "8", "--icnn-hidden", "4", "--out", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="Bernoulli likelihood needs binary data"):
        main(base + ["--data", str(grey), "--likelihood", "bernoulli"])
    nan = tmp_path / "nan.npz"
    x = np.zeros((30, 4), dtype=np.float32)
    x[3, 1] = np.nan
    np.savez(nan, x=x)
    with pytest.raises(ValueError, match="NaN or inf"):
        main(base + ["--data", str(nan)])
    with pytest.raises(FileNotFoundError, match="train-images"):
        main(base + ["--data", f"idx:{tmp_path}"])
    with pytest.raises(ValueError, match="latent_dim must be an int >= 1"):
        ImageConfig(latent_dim=0)


def test_reproduce_table_and_claim_checks(tmp_path, binary_npz):
    base = ImageConfig(data=binary_npz, **{**TINY, "epochs": 2})
    result = reproduce_lidvae(base, [0, 1], str(tmp_path), variants=("vae", "lidvae"), jobs=1, log=_quiet)
    table = json.loads((tmp_path / "table.json").read_text())
    assert set(table["rows"]) == {"vae", "lidvae"}
    for variant in ("vae", "lidvae"):
        per_seed = table["rows"][variant]["per_seed"]
        assert [r["seed"] for r in per_seed] == [0, 1]
        metrics = json.loads((tmp_path / variant / "seed1" / "metrics.json").read_text())
        assert per_seed[1]["iw_ll"] == metrics["iw_ll"]
        au = [r["au"] for r in per_seed]
        assert table["rows"][variant]["summary"]["au"]["mean"] == pytest.approx(np.mean(au))
    md = (tmp_path / "table.md").read_text()
    assert md.strip() == format_lidvae_table(result).strip() and "LIDVAE" in md and "IW-LL" in md
    # resume reuses finished runs
    again = reproduce_lidvae(base, [0, 1], str(tmp_path), variants=("vae", "lidvae"), jobs=1, resume=True,
                             log=_quiet)
    assert again["rows"]["lidvae"]["per_seed"] == result["rows"]["lidvae"]["per_seed"]


def test_claim_checks_can_fail():
    def row(aus, iw):
        return {"per_seed": [{"au": a} for a in aus], "summary": {"iw_ll": {"mean": iw}}}

    ok = claim_checks({"lidvae": row([16, 15, 16], -17.5), "vae": row([8, 8, 8], -17.2)}, 16)
    assert ok["lidvae_au_at_least_d_minus_1_every_seed"] and ok["iw_ll_within_3_percent"]
    bad = claim_checks({"lidvae": row([16, 14, 16], -18.5), "vae": row([8, 8, 8], -17.2)}, 16)
    assert not bad["lidvae_au_at_least_d_minus_1_every_seed"] and not bad["iw_ll_within_3_percent"]
    assert bad["iw_ll_gap_relative_to_vae"] == pytest.approx(1.3 / 17.2)


def test_variants_cover_the_comparison():
    assert {"vae", "beta_vae", "lidvae_anchor", "lidvae", "lidvae_alpha0", "lidvae_linear"} <= set(VARIANTS)
    assert VARIANTS["lidvae_anchor"][2]["anchor_recipe"] is True


def test_early_stopping_on_the_validation_objective(tmp_path, binary_npz):
    # lr 0 keeps the parameters: the validation −ELBO (same seed each evaluation) never improves
    # after the first evaluation, so training stops `patience` epochs after it
    cfg = ImageConfig(model="vae", data=binary_npz, **{**TINY, "epochs": 20, "val_every": 1, "patience": 3, "lr": 0.0})
    m = run_image_train(cfg, str(tmp_path), log=_quiet)
    assert m["selected_epoch"] == 1 and m["epochs_trained"] == 4
    assert m["history"][-1]["stop"] is True and len(m["history"]) == 4
    with pytest.raises(ValueError, match="patience must be an int >= 0"):
        ImageConfig(patience=-1)


def test_min_improvement_is_validated():
    with pytest.raises(ValueError, match="min_improvement must be a finite number >= 0"):
        ImageConfig(min_improvement=-0.1)
    with pytest.raises(ValueError, match="min_improvement must be a finite number >= 0"):
        ImageConfig(min_improvement=float("nan"))


def test_step_benchmark_runs_and_its_three_steps_agree(tmp_path):
    """benchmarks/lidvae_step.py: one round on a narrow ICNN; its output (the ratios' inputs) and
    the fused/reference loss agreement, not timings (noise)."""
    import math
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
    import lidvae_step

    out = lidvae_step.main(["--rounds", "1", "--icnn-hidden", "16", "--batch-size", "20",
                            "--out", str(tmp_path / "step.json")])
    assert set(out["results"]) == {"lidvae", "lidvae_anchor"}
    for r in out["results"].values():
        assert r["loss_difference"] < 1e-3
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("ratio_reference_over_fused", "ratio_bound_with_free_icnns"))
    assert json.load(open(tmp_path / "step.json"))["icnn_hidden"] == 16
