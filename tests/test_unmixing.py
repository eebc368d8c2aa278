"""Segment unmixing: the linear solve, folding it into an iVAE, and training through it."""

import warnings

import numpy as np
import pytest
import torch

from ivae_ext import fit
from ivae_ext.data import make_nonlinear_ica
from ivae_ext.experiments import TrainConfig, resolve_unmix_epochs, segment_labels
from ivae_ext.metrics import mcc
from ivae_ext.models import IVAE
from ivae_ext.models.unmixing import segment_unmixing, unmix_latents

warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*compiled extension.*")


def _segment_sources(seed=0, n_segments=12, per_segment=300, dim=3):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.5, 3.0, size=(n_segments, dim))
    labels = np.repeat(np.arange(n_segments), per_segment)
    return rng.standard_normal((len(labels), dim)) * scales[labels], labels


def test_segment_unmixing_recovers_a_linear_mix():
    s, labels = _segment_sources()
    mixing = np.random.default_rng(1).normal(size=(3, 3))
    z = s @ mixing
    assert mcc(z, s)[0] < 0.9  # mixed to begin with
    matrix, info = segment_unmixing(z, labels)
    assert matrix.shape == (3, 3) and matrix.dtype == torch.float64
    assert mcc(z @ matrix.numpy().T, s)[0] > 0.99
    assert info["criterion_after"] < info["criterion_before"]


def test_segment_unmixing_needs_two_points_per_segment():
    s, labels = _segment_sources()
    labels = labels.copy()
    labels[-1] = labels.max() + 1
    with pytest.raises(ValueError, match="at least 2 points in every segment"):
        segment_unmixing(s, labels)


def _trained_model(posterior_cov="full", prior="gaussian", prior_mean=False):
    d = make_nonlinear_ica(n_sources=2, n_segments=6, per_segment=80, mixing_layers=2, seed=0)
    x, u = torch.as_tensor(d.x, dtype=torch.float64), torch.as_tensor(d.u, dtype=torch.float64)
    torch.manual_seed(0)
    posterior = "gaussian" if posterior_cov == "full" else None
    m = IVAE(2, 2, 6, hidden_dim=16, prior=prior, posterior=posterior, posterior_cov=posterior_cov,
             prior_mean=prior_mean, prior_layers=1).double()
    fit(m, x, u, epochs=3, batch_size=32, lr=3e-3, seed=0, progress=False)
    return m, x, u, torch.as_tensor(d.labels)


@pytest.mark.parametrize("posterior_cov, prior, prior_mean",
                         [("full", "gaussian", False), ("diag", "gaussian", True), ("full", "laplace", True)])
def test_unmix_latents_changes_coordinates_not_the_model(posterior_cov, prior, prior_mean):
    m, x, u, labels = _trained_model(posterior_cov, prior, prior_mean)
    with torch.no_grad():
        loc, log_scale = m.encode(x, u)
        recon = m.decode(loc)
        _, _, chol = m._posterior(x, u)
        cov = chol @ chol.transpose(1, 2) if chol is not None else torch.diag_embed(torch.exp(2 * log_scale))
    info = unmix_latents(m, x, u, labels, steps=600)
    r = torch.tensor(info["matrix"], dtype=torch.float64)
    c = torch.tensor(info["centre"], dtype=torch.float64)
    with torch.no_grad():
        new_loc, new_log_scale = m.encode(x, u)
        # exact: the encoder mean moves to R (z − c) and the decoder still reconstructs the same x
        torch.testing.assert_close(new_loc, (loc - c) @ r.T, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(m.decode(new_loc), recon, rtol=1e-9, atol=1e-9)
        # refitted by regression: the marginal posterior scales of R Σ Rᵀ and the per-segment prior
        target_scale = 0.5 * torch.log(torch.diagonal(r @ cov @ r.T, dim1=1, dim2=2))
        assert (new_log_scale - target_scale).abs().median() < 0.1
        p_loc, _ = m.prior_params(torch.eye(6, dtype=torch.float64))
        if prior_mean:
            seg_mean = torch.stack([new_loc[labels == k].mean(0) for k in range(6)])
            torch.testing.assert_close(p_loc, seg_mean, rtol=0, atol=0.05)
    assert info["criterion_after"] <= info["criterion_before"]
    assert set(info["refit_errors"]) >= {"log_var_head", "prior"}


def test_resume_across_an_unmixing_step_is_bit_identical(tmp_path):
    d = make_nonlinear_ica(n_sources=2, n_segments=4, per_segment=40, mixing_layers=2, seed=0)
    x, u, labels = torch.as_tensor(d.x), torch.as_tensor(d.u), torch.as_tensor(d.labels)

    def run(checkpoint=None, resume=False, stop=None):
        torch.manual_seed(0)
        m = IVAE(2, 2, 4, hidden_dim=8, posterior_cov="full", prior_layers=1)
        if resume:
            torch.manual_seed(99)

        def hook(epoch, model, record):
            if epoch == 1:
                record["unmixing"] = unmix_latents(model, x, u, labels, steps=20)
                return True
            return False

        hist = fit(m, x, u, epochs=3, batch_size=16, lr=1e-2, seed=2, progress=False, on_epoch_end=hook,
                   checkpoint=checkpoint, resume=resume, max_epochs_this_call=stop)
        return m, hist

    full, full_hist = run()
    ckpt = str(tmp_path / "ckpt.pt")
    run(checkpoint=ckpt, stop=1)  # stops right after the unmixing step
    resumed, resumed_hist = run(checkpoint=ckpt, resume=True)
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, full.state_dict()[k]), f"parameter {k} differs after resume"
    assert [r["loss"] for r in resumed_hist["epochs"]] == [r["loss"] for r in full_hist["epochs"]]
    assert "unmixing" in full_hist["epochs"][0]


def test_unmix_epochs_resolution_and_errors():
    one_hot = np.eye(3)[[0, 1, 2, 0]]
    labels = segment_labels(one_hot)
    assert labels.tolist() == [0, 1, 2, 0]
    assert segment_labels(np.array([[0.5, 0.5], [1.0, 0.0]])) is None
    assert resolve_unmix_epochs(TrainConfig(epochs=40), labels) == [10, 20]
    assert resolve_unmix_epochs(TrainConfig(epochs=15), labels) == [10]
    assert resolve_unmix_epochs(TrainConfig(epochs=40), None) == []  # auto: off without segments
    assert resolve_unmix_epochs(TrainConfig(model="vae"), labels) == []
    assert resolve_unmix_epochs(TrainConfig(unmix_epochs="none"), labels) == []
    assert resolve_unmix_epochs(TrainConfig(unmix_epochs="3,1"), labels) == [1, 3]
    with pytest.raises(ValueError, match="u must be one-hot"):
        resolve_unmix_epochs(TrainConfig(unmix_epochs="2"), None)
    with pytest.raises(ValueError, match="must lie in 1..epochs=40"):
        resolve_unmix_epochs(TrainConfig(unmix_epochs="50"), labels)
    with pytest.raises(ValueError, match="comma-separated epochs"):
        resolve_unmix_epochs(TrainConfig(unmix_epochs="ten"), labels)
