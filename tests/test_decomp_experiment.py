"""DecompVAE runs from the command line: every dataset writes its files and the metrics its
labels or factors allow; bad options are refused with messages that name them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ivae_ext.cli import main, train_family
from ivae_ext.cli import decomp as decomp_family
from ivae_ext.experiments.decomp import DecompConfig, build_prior


def _train(tmp_path, name, *args):
    out = str(tmp_path / name)
    assert main(["train", "--model", "decomp", "--no-progress", "--val-every", "1", "--iw-samples", "5",
                 "--out", out, *args]) == 0
    for f in ("metrics.json", "curves.png", "latents.png", "model.pt"):
        assert os.path.exists(os.path.join(out, f)), f
    return json.load(open(os.path.join(out, "metrics.json")))


def test_pinwheel_with_a_mixture_prior_reports_clustering(tmp_path):
    assert train_family("decomp", "pinwheel") is decomp_family
    m = _train(tmp_path, "pw", "--data", "pinwheel", "--n", "60", "--prior", "gmm", "--alpha", "1",
               "--divergence", "kl-inclusive", "--epochs", "3", "--batch-size", "20")
    for key in ("cluster_acc", "nmi", "ari", "iw_ll", "recon", "kl", "reg", "hoyer", "val_objective", "config"):
        assert key in m, key
    assert 0 <= m["cluster_acc"] <= 1 and m["n_test"] == 60 and m["config"]["prior"] == "gmm"
    assert m["model_config"]["divergence"] == "kl-inclusive" and m["iw_ll"] < 0


def test_sprites_report_disentanglement_and_mcc(tmp_path):
    m = _train(tmp_path, "sp", "--data", "sprites", "--n", "300", "--prior", "anisotropic", "--learn-prior",
               "--epochs", "2", "--latent-dim", "4", "--hidden", "32")
    assert 0 <= m["disentanglement"] <= 1 and 0 <= m["mcc"] <= 1 and "cluster_acc" not in m
    assert m["model_config"]["likelihood"] == "bernoulli"


def test_digits_sparse_prior_and_an_npz_with_labels(tmp_path):
    m = _train(tmp_path, "dg", "--data", "digits", "--prior", "sparse", "--gamma", "0.8", "--alpha", "10",
               "--epochs", "1", "--latent-dim", "8", "--hidden", "32")
    assert 0 <= m["hoyer"] <= 1 and m["model_config"]["likelihood"] == "laplace" and "reg" in m
    m = _train(tmp_path, "dg32", "--data", "digits32", "--prior", "sparse", "--alpha", "10", "--epochs", "1",
               "--latent-dim", "6", "--hidden", "8")
    assert m["model_config"]["likelihood"] == "laplace" and m["config"]["arch"] is None and "val_recon" in m
    state = __import__("torch").load(os.path.join(tmp_path, "dg32", "model.pt"))
    assert state["encoder.trunk.0.weight"].shape == (8, 1, 4, 4)  # the DCGAN networks, width from --hidden
    path = str(tmp_path / "blobs.npz")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    np.savez(path, x=rng.normal(size=(200, 2)) + 3 * np.eye(2)[labels % 2], labels=labels)
    m = _train(tmp_path, "npz", "--data", path, "--prior", "gmm", "--latent-dim", "2", "--epochs", "1")
    assert "cluster_acc" in m and m["n_train"] == 140


def test_bad_options_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        DecompConfig(batch_size=1)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        DecompConfig(alpha=-1.0)
    with pytest.raises(ValueError, match="gamma .* must be in \\[0, 1\\]"):
        DecompConfig(gamma=1.5)
    with pytest.raises(ValueError, match="data must be one of"):
        DecompConfig(data="mnist")
    with pytest.raises(ValueError, match="arch must be one of"):
        DecompConfig(arch="resnet")
    with pytest.raises(ValueError, match="arch 'conv' .* needs 32 × 32 single-channel images .* got 64 values"):
        main(["train", "--model", "decomp", "--data", "digits", "--arch", "conv", "--epochs", "1", "--no-progress",
              "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit):
        main(["train", "--model", "decomp", "--prior", "laplace", "--out", str(tmp_path)])
    missing = str(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        main(["train", "--model", "decomp", "--data", missing, "--no-progress", "--out", str(tmp_path / "m")])


def test_priors_built_for_each_option():
    for prior in ("gaussian", "anisotropic", "student-t", "sparse", "gmm"):
        p = build_prior(DecompConfig(prior=prior, data="sprites"), 3)
        dist = p() if callable(p) else p
        assert tuple(dist.event_shape) == (3,)
    iso = build_prior(DecompConfig(prior="gaussian", data="pinwheel"), 2)()
    np.testing.assert_allclose(iso.base_dist.scale.numpy(), np.sqrt(0.03), rtol=1e-6)  # the anchor's pinwheel prior


def test_reproduce_writes_tables_and_claim_checks(tmp_path):
    from ivae_ext.experiments.decomp_reproduce import decomp_claim_checks

    out = str(tmp_path / "rep")
    assert main(["reproduce", "decomp", "--experiments", "pinwheel", "--seeds", "0", "--epochs", "2", "--n", "40",
                 "--jobs", "1", "--out", out]) == 0
    table = __import__("json").load(open(os.path.join(out, "table.json")))
    assert set(table["tables"]["pinwheel"]) == {"beta1_alpha0", "beta0_alpha1", "beta1_alpha1_kl-inclusive",
                                                "beta1_alpha1_kl", "beta1_alpha1_mmd-joint"}
    assert "pinwheel_beta1_alpha1_kl_met" in table["claims"]
    assert "| β = 1, α = 1, D = KL(q ‖ p) |" in open(os.path.join(out, "table.md")).read()
    row = lambda **s: {"summary": {k: {"mean": v, "std": 0.0} for k, v in s.items()}}
    sparsity = {"gamma0_alpha0": row(hoyer=0.2, recon=100.0, val_recon=100.0),
                "gamma0.8_alpha0": row(hoyer=0.25, recon=101.0, val_recon=101.0),
                "gamma0.8_alpha10": row(hoyer=0.31, recon=104.0, val_recon=104.5),
                "gamma0.8_alpha100": row(hoyer=0.4, recon=110.0, val_recon=105.5)}
    checks = first = decomp_claim_checks({"sparsity": sparsity,
                                  "sprites": {"isotropic": row(disentanglement=0.6, recon=50.0),
                                              "anisotropic": row(disentanglement=0.7, recon=51.0)}})
    assert checks["sparsity_gamma0.8_alpha10_met"] and not checks["sparsity_gamma0.8_alpha100_met"]
    # α is chosen on the validation reconstruction alone: 100 fails it (5.5% > 5%), so 10 is chosen
    assert checks["sparsity_chosen_alpha"] == 10.0 and checks["sparsity_hoyer_rises_with_alpha"]
    assert checks["sparsity_met"]
    sparsity["gamma0.8_alpha100"] = row(hoyer=0.4, recon=110.0, val_recon=104.9)  # now 100 passes on validation...
    checks = decomp_claim_checks({"sparsity": sparsity})
    assert checks["sparsity_chosen_alpha"] == 100.0 and not checks["sparsity_met"]  # ...but not on the test split
    sparsity["gamma0.8_alpha10"] = row(hoyer=0.24, recon=104.0, val_recon=104.5)  # Hoyer no longer rises with α
    assert not decomp_claim_checks({"sparsity": sparsity})["sparsity_hoyer_rises_with_alpha"]
    assert first["sprites_anisotropic_met"] and first["sprites_anisotropic_disentanglement_gain"] == pytest.approx(0.1)
