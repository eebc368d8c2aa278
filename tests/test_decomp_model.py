"""DecompVAE: the α/β objective's terms against direct computations, every divergence, learned
priors, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from ivae_ext import reference
from ivae_ext.distributions import (AnisotropicPrior, GaussianMixturePrior, SpikeAndSlab, circle_means,
                                    gaussian_prior, student_t_prior)
from ivae_ext.models.decomp import DIVERGENCES, DecompVAE, MLPDecoder, MLPEncoder


def f64(value):
    return torch.tensor(value, dtype=torch.float64)


def _model(prior, d=2, data_dim=3, **kw):
    torch.manual_seed(0)
    learn_scale = kw.pop("learn_scale", False)
    return DecompVAE(MLPEncoder(data_dim, d, hidden=16), MLPDecoder(d, (data_dim,), hidden=16, learn_scale=learn_scale),
                     d, prior, **kw).double()


def _terms_by_hand(model, x, seed):
    """recon and KL written out from the model's encoder/decoder with the same noise."""
    torch.manual_seed(seed)
    loc, scale = model.encode(x)
    z = loc + scale * torch.randn_like(loc)
    mean, dec_scale = model.decode(z)
    dec_scale = dec_scale if dec_scale is not None else torch.full_like(mean, model.decoder_scale)
    return loc, scale, z, mean, dec_scale


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace"])
def test_loss_terms_match_a_direct_computation_gaussian_prior(likelihood):
    model = _model(gaussian_prior(2, scale=f64(1.0)), likelihood=likelihood, beta=0.7)
    x = torch.randn(9, 3, dtype=torch.float64)
    loc, scale, z, mean, dec_scale = _terms_by_hand(model, x, 5)
    dist = Normal(mean, dec_scale) if likelihood == "gaussian" else torch.distributions.Laplace(mean, dec_scale)
    recon = -dist.log_prob(x).sum(1).mean()
    kl = torch.distributions.kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(1).mean()
    torch.manual_seed(5)
    out = model.loss({"x": x})
    torch.testing.assert_close(out["recon"], recon)
    torch.testing.assert_close(out["kl"], kl)
    torch.testing.assert_close(out["loss"], recon + 0.7 * kl)
    assert "reg" not in out  # alpha = 0: D is not computed


def test_bernoulli_likelihood_and_learned_decoder_scale():
    model = _model(gaussian_prior(2, scale=f64(1.0)), likelihood="bernoulli")
    x = torch.randint(0, 2, (6, 3)).double()
    _, _, z, logits, _ = _terms_by_hand(model, x, 1)
    torch.manual_seed(1)
    out = model.loss({"x": x})
    torch.testing.assert_close(out["recon"], torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x, reduction="none").sum(1).mean())
    learned = _model(gaussian_prior(2, scale=f64(1.0)), learn_scale=True)
    _, scale = learned.decode(torch.zeros(4, 2, dtype=torch.float64))
    assert scale is not None and (scale > 0).all()


def test_mixture_prior_kl_is_the_joint_monte_carlo_value():
    prior = GaussianMixturePrior(circle_means(4), scale=math.sqrt(0.03))
    model = _model(prior)
    x = torch.randn(7, 3, dtype=torch.float64)
    loc, scale, z, _, _ = _terms_by_hand(model, x, 3)
    log_q = Independent(Normal(loc, scale), 1).log_prob(z)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(4, dtype=torch.float64)),
        Independent(Normal(circle_means(4).double(), math.sqrt(0.03)), 1))
    torch.manual_seed(3)
    out = model.loss({"x": x})
    torch.testing.assert_close(out["kl"], (log_q - mix.log_prob(z)).mean())


def test_exclusive_and_inclusive_kl_divergences_against_the_reference_mixture():
    prior = gaussian_prior(2, scale=f64(1.0))
    x = torch.randn(8, 3, dtype=torch.float64)
    for divergence in ("kl", "kl-inclusive"):
        model = _model(prior, alpha=2.0, divergence=divergence)
        loc, scale, z, _, _ = _terms_by_hand(model, x, 4)
        if divergence == "kl":
            log_qz = reference.aggregate_log_q(z, loc, scale.log())[0]
            expected = (log_qz - prior.log_prob(z)).mean()
        torch.manual_seed(4)
        out = model.loss({"x": x})
        if divergence == "kl":
            torch.testing.assert_close(out["reg"], expected)
        else:  # E_p[log p − log q]: finite and its gradient reaches the encoder
            assert torch.isfinite(out["reg"])
            model.zero_grad()
            out["reg"].backward()
            assert model.encoder[-1].weight.grad.abs().sum() > 0
        torch.testing.assert_close(out["loss"], out["recon"] + out["kl"] + 2.0 * out["reg"])


@pytest.mark.parametrize("divergence", ["mmd", "mmd-joint"])
def test_mmd_divergence_is_the_mmd_of_prior_draws_against_the_posterior_samples(divergence):
    model = _model(gaussian_prior(2, scale=f64(1.0)), alpha=1.0, divergence=divergence)
    x = torch.randn(10, 3, dtype=torch.float64)
    loc, scale = model.encode(x)
    torch.manual_seed(2)
    z = loc + scale * torch.randn_like(loc)
    draws = model.prior().rsample((10,))  # the loss draws these right after its own noise
    expected = reference.imq_mmd(draws, z, model.mmd_scales, per_dim=divergence == "mmd")
    torch.manual_seed(2)
    out = model.loss({"x": x})
    torch.testing.assert_close(out["reg"], expected)
    model.zero_grad()
    out["reg"].backward()
    assert model.encoder[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("make_prior", [
    lambda: gaussian_prior(2, scale=f64(1.0)), lambda: student_t_prior(2, f64(9.0), scale=f64(1.0)), lambda: SpikeAndSlab(2, gamma=f64(0.8)),
    lambda: AnisotropicPrior(2, learn=True), lambda: GaussianMixturePrior(circle_means(4), learn_means=True)])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_every_prior_and_divergence_trains_a_step(make_prior, divergence):
    prior = make_prior()  # a fixed spike-and-slab has no rsample: its draws need no gradient
    model = _model(prior, alpha=1.0, divergence=divergence)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(16, 3, dtype=torch.float64)
    out = model.loss({"x": x})
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert torch.isfinite(out["loss"])
    if isinstance(prior, torch.nn.Module) and divergence in ("kl", "kl-inclusive"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters())


def test_errors_name_the_argument():
    enc, dec = MLPEncoder(3, 2), MLPDecoder(2, (3,))
    with pytest.raises(ValueError, match="likelihood must be one of"):
        DecompVAE(enc, dec, 2, gaussian_prior(2, scale=f64(1.0)), likelihood="poisson")
    with pytest.raises(ValueError, match="divergence must be one of"):
        DecompVAE(enc, dec, 2, gaussian_prior(2, scale=f64(1.0)), divergence="wasserstein")
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        DecompVAE(enc, dec, 2, gaussian_prior(2, scale=f64(1.0)), alpha=-1.0)
    with pytest.raises(ValueError, match="event_shape must be \\(2,\\)"):
        DecompVAE(enc, dec, 2, gaussian_prior(3))
    with pytest.raises(ValueError, match="the prior is torch.float32 on cpu but the encoder gives torch.float64"):
        DecompVAE(MLPEncoder(3, 2), MLPDecoder(2, (3,)), 2, gaussian_prior(2)).double().loss(
            {"x": torch.randn(4, 3, dtype=torch.float64)})
    with pytest.raises(TypeError, match="prior must be a torch Distribution"):
        DecompVAE(enc, dec, 2, "gaussian")
    with pytest.raises(ValueError, match="mmd_scales must be a non-empty sequence"):
        DecompVAE(enc, dec, 2, gaussian_prior(2, scale=f64(1.0)), mmd_scales=(1.0, -2.0))
    model = DecompVAE(enc, dec, 2, gaussian_prior(2, scale=f64(1.0)))
    with pytest.raises(ValueError, match="at least 2 points"):
        model.loss({"x": torch.randn(1, 3)})
    with pytest.raises(ValueError, match="the decoder returned shape"):
        DecompVAE(enc, MLPDecoder(2, (4,)), 2, gaussian_prior(2, scale=f64(1.0))).loss({"x": torch.randn(4, 3)})
