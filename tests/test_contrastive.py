"""Segment-contrastive pretraining: the classifier's logits, what pretraining recovers, its errors,
the auto rule, and resuming a run that was pretrained."""

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

from ivae_ext.cli import main
from ivae_ext.data import make_nonlinear_ica
from ivae_ext.data.preprocess import fit_preprocessing
from ivae_ext.experiments import TrainConfig, resolve_pretrain_epochs, segment_labels
from ivae_ext.metrics import mcc
from ivae_ext.models import IVAE
from ivae_ext.models.contrastive import contrastive_pretrain, segment_logits

warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*compiled extension.*")


@pytest.mark.parametrize("prior", ["gaussian", "laplace"])
def test_segment_logits_are_log_prior_density_plus_log_frequency(prior):
    torch.manual_seed(0)
    model = IVAE(3, 2, 4, hidden_dim=8, prior=prior, prior_mean=True, prior_layers=1).double()
    z = torch.randn(5, 2, dtype=torch.float64)
    log_frequency = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    logits = segment_logits(model, z, log_frequency)
    dist = torch.distributions.Normal if prior == "gaussian" else torch.distributions.Laplace
    for m in range(4):
        loc, log_scale = model.prior_params(torch.eye(4, dtype=torch.float64)[m:m + 1])
        expected = dist(loc, torch.exp(log_scale)).log_prob(z).sum(-1) + log_frequency[m]
        torch.testing.assert_close(logits[:, m], expected, rtol=0, atol=1e-12)


def _laplace_with_means(seed=0):
    # one mixing layer: x is a linear mix of the sources, so a short pretraining must unmix it
    d = make_nonlinear_ica(n_sources=2, n_segments=20, per_segment=100, mixing_layers=1,
                           source_dist="laplace", segment_means=True, seed=seed)
    return d, torch.as_tensor(fit_preprocessing(d.x, "whiten")(d.x)), torch.as_tensor(d.u)


def test_pretraining_recovers_sources_and_keeps_the_encoder_consistent_with_u():
    d, x, u = _laplace_with_means()
    torch.manual_seed(0)
    model = IVAE(2, 2, 20, hidden_dim=16, prior="laplace", posterior="gaussian", prior_mean=True,
                 posterior_cov="full", prior_layers=1)
    with torch.no_grad():
        before = mcc(model.encode(x, u)[0], d.s)[0]
    info = contrastive_pretrain(model, x, u, epochs=15, batch_size=64, lr=1e-2, decoder_steps=200)
    with torch.no_grad():
        z_real_u = model.encode(x, u)[0]
        z_no_u = model.encoder_loc(torch.cat([x, torch.zeros_like(u)], 1))
    assert torch.equal(z_real_u, z_no_u), "the encoder's u-columns must be zero after pretraining"
    after = mcc(z_real_u, d.s)[0]
    assert after > 0.95 and after > before + 0.1, (before, after)
    assert len(info["loss"]) == 15 and info["loss"][-1] < info["loss"][0]
    # the decoder was fitted to the pretrained latents: better than predicting the mean of x
    assert info["decoder_fit_error"] < 0.5 * float(x.var(0).mean())
    assert info["seconds"] > 0


def test_pretraining_errors_name_the_problem():
    _, x, u = _laplace_with_means()
    model = IVAE(2, 2, 20, hidden_dim=8, prior="laplace", prior_mean=True, prior_layers=1)
    with pytest.raises(ValueError, match="every row of u must be one-hot"):
        contrastive_pretrain(model, x, u * 0.5, epochs=1)
    with pytest.raises(ValueError, match=r"u must be \[N, M\] one-hot with N = 2000 rows"):
        contrastive_pretrain(model, x, u[:-1], epochs=1)
    with pytest.raises(ValueError, match="aux_dim = 20"):
        contrastive_pretrain(model, x, u[:, :5] * 0 + torch.eye(5)[torch.arange(len(x)) % 5], epochs=1)
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        contrastive_pretrain(model, x, u, epochs=0)
    with pytest.raises(FloatingPointError, match="cross-entropy became nan"):
        contrastive_pretrain(model, x * math.nan, u, epochs=1)


def test_pretrain_epochs_resolution_and_errors():
    labels = segment_labels(np.eye(3)[[0, 1, 2, 0]])
    means = dict(segment_means=True)
    assert resolve_pretrain_epochs(TrainConfig(**means), labels) == 30
    assert resolve_pretrain_epochs(TrainConfig(), labels) == 0  # zero-mean segments: the classifier sees |z|
    assert resolve_pretrain_epochs(TrainConfig(prior_mean="on"), labels) == 30
    assert resolve_pretrain_epochs(TrainConfig(**means), None) == 0  # no discrete segments
    assert resolve_pretrain_epochs(TrainConfig(model="vae", **means), labels) == 0
    assert resolve_pretrain_epochs(TrainConfig(pretrain_epochs="5"), labels) == 5
    assert resolve_pretrain_epochs(TrainConfig(pretrain_epochs="0", **means), labels) == 0
    with pytest.raises(ValueError, match="u must be one-hot"):
        resolve_pretrain_epochs(TrainConfig(pretrain_epochs="5"), None)
    for bad in ("ten", "-1"):
        with pytest.raises(ValueError, match="'auto' or an integer >= 0"):
            resolve_pretrain_epochs(TrainConfig(pretrain_epochs=bad), labels)


def test_train_with_pretraining_records_it_and_resumes_to_the_same_result(tmp_path):
    out = str(tmp_path / "run")
    args = ["train", "--out", out, "--source-dist", "laplace", "--segment-means", "--sources", "2",
            "--segments", "3", "--per-segment", "40", "--mixing-layers", "2", "--hidden", "8", "--epochs", "2",
            "--batch-size", "32", "--pretrain-epochs", "3", "--no-progress"]
    assert main(args) == 0
    first = json.load(open(os.path.join(out, "metrics.json")))
    assert first["pretrain_epochs"] == 3 and len(first["pretraining"]["loss"]) == 3
    assert first["train_time_s"] >= first["pretraining"]["seconds"]
    assert main(args + ["--resume"]) == 0
    again = json.load(open(os.path.join(out, "metrics.json")))
    assert again["final_loss_terms"] == first["final_loss_terms"]
    assert again["pretraining"] == first["pretraining"]
