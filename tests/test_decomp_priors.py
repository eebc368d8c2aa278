"""Decomposition-VAE priors: shapes, densities against torch or a grid integral, sampling moments,
the Monte-Carlo KL, and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    StudentT,
)
from torch.distributions import kl_divergence as torch_kl

import ivae_ext
from ivae_ext.distributions import (
    AnisotropicPrior,
    GaussianMixture,
    GaussianMixturePrior,
    SpikeAndSlab,
    circle_means,
    gaussian_prior,
    kl_divergence,
    monte_carlo_kl,
    student_t_prior,
)

F64 = torch.float64


def _grid_integral_1d(log_prob, lo=-12.0, hi=12.0, n=200001):
    z = torch.linspace(lo, hi, n, dtype=F64)
    return torch.trapezoid(log_prob(z[:, None]).exp(), z).item()


def _grid_integral_2d(log_prob, lo=-4.0, hi=4.0, n=801):
    t = torch.linspace(lo, hi, n, dtype=F64)
    zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1)  # [n, n, 2]
    dens = log_prob(zz).exp()
    return torch.trapezoid(torch.trapezoid(dens, t, dim=1), t).item()


def _mixture_f64(k=4, d=2, seed=0, per_component=True):
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=gen, dtype=F64)
    scales = 0.3 + torch.rand(k, d if per_component else 1, generator=gen, dtype=F64)
    weights = torch.softmax(torch.randn(k, generator=gen, dtype=F64), 0)
    return GaussianMixture(means, scales, weights), means, scales.expand(k, d), weights


# ------------------------------------------------------------------ kl_divergence still exported


def test_kl_divergence_is_still_exported_from_the_package_and_the_top_level():
    assert ivae_ext.kl_divergence is kl_divergence is ivae_ext.distributions.kl.kl_divergence


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize(
    "prior",
    [
        gaussian_prior(3),
        gaussian_prior(3, scale=[0.5, 1.0, 2.0]),
        student_t_prior(3, df=9.0),
        AnisotropicPrior(3)(),
        AnisotropicPrior(3, family="student-t", df=2.0, learn=True)(),
        SpikeAndSlab(3),
        GaussianMixture(torch.randn(5, 3), 0.4),
    ],
    ids=["iso", "aniso", "student", "module-gauss", "module-t", "spike", "gmm"],
)
def test_every_prior_has_event_shape_d_and_a_joint_log_prob(prior):
    assert prior.batch_shape == () and prior.event_shape == (3,)
    z = prior.sample((7, 2))
    assert z.shape == (7, 2, 3)
    assert prior.log_prob(z).shape == (7, 2), "log_prob must sum over the latent (event) dimension"
    assert prior.log_prob(torch.zeros(3)).shape == ()


# ------------------------------------------------------------------ Gaussian and Student-t


def test_gaussian_prior_matches_torch_normal_and_uses_the_analytic_kl():
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    prior = gaussian_prior(3, scale=scale)
    z = torch.randn(10, 3, dtype=F64)
    torch.testing.assert_close(prior.log_prob(z), Normal(0.0, scale).log_prob(z).sum(-1))
    q = Independent(Normal(torch.randn(10, 3, dtype=F64), torch.rand(10, 3, dtype=F64) + 0.2), 1)
    torch.testing.assert_close(kl_divergence(q, prior), torch_kl(q, prior))


def test_student_t_prior_matches_a_product_of_torch_student_t():
    prior = student_t_prior(4, df=torch.tensor([2.0, 3.0, 9.0, 30.0], dtype=F64), scale=0.7)
    z = 3 * torch.randn(20, 4, dtype=F64)
    want = StudentT(torch.tensor([2.0, 3.0, 9.0, 30.0], dtype=F64), 0.0, 0.7).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), want)


def test_anisotropic_prior_keeps_the_total_variance_and_learns_only_its_split():
    prior = AnisotropicPrior(4, variance_scale=0.5, variances=[1.0, 2.0, 3.0, 4.0], learn=True)
    v = prior.variances()
    torch.testing.assert_close(v.sum(), torch.tensor(2.0))  # variance_scale · dim
    torch.testing.assert_close(v / v.sum(), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    opt = torch.optim.SGD(prior.parameters(), lr=0.5)
    for _ in range(5):  # a loss that wants dimension 0 wide: the split changes, the total does not
        opt.zero_grad()
        (-prior().log_prob(torch.tensor([[3.0, 0.0, 0.0, 0.0]]))).sum().backward()
        opt.step()
    v2 = prior.variances().detach()
    assert v2[0] > v[0] and abs(float(v2.sum()) - 2.0) < 1e-5


def test_fixed_anisotropic_prior_has_no_parameters_and_an_isotropic_default():
    prior = AnisotropicPrior(3, variance_scale=0.03)
    assert list(prior.parameters()) == []
    torch.testing.assert_close(prior().base_dist.scale, torch.full((3,), 0.03**0.5))


def test_anisotropic_student_t_squares_the_scale():
    prior = AnisotropicPrior(2, family="student-t", df=9.0, variances=[1.0, 3.0])()
    assert isinstance(prior.base_dist, StudentT)
    torch.testing.assert_close(prior.base_dist.scale, torch.tensor([0.5, 1.5]).sqrt())


# ------------------------------------------------------------------ spike and slab


def test_spike_and_slab_log_prob_is_the_per_dimension_mixture():
    prior = SpikeAndSlab(3, gamma=torch.tensor(0.8, dtype=F64))
    z = torch.randn(50, 3, dtype=F64)
    spike, slab = Normal(torch.tensor(0.0, dtype=F64), 0.05), Normal(torch.tensor(0.0, dtype=F64), 1.0)
    want = torch.log(0.8 * spike.log_prob(z).exp() + 0.2 * slab.log_prob(z).exp()).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), want)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.8, 1.0])
def test_spike_and_slab_density_integrates_to_one(gamma):
    prior = SpikeAndSlab(1, gamma=torch.tensor(gamma, dtype=F64))
    assert abs(_grid_integral_1d(prior.log_prob) - 1) < 1e-6


def test_spike_and_slab_with_gamma_zero_is_the_slab_and_has_finite_gradients():
    prior = SpikeAndSlab(2, gamma=torch.tensor(0.0, dtype=F64))
    z = torch.randn(5, 2, dtype=F64, requires_grad=True)
    lp = prior.log_prob(z)
    torch.testing.assert_close(lp, Normal(0.0, 1.0).log_prob(z).sum(-1))
    (g,) = torch.autograd.grad(lp.sum(), z)
    assert torch.isfinite(g).all()


def test_spike_and_slab_samples_have_the_mixture_moments_and_no_rsample():
    torch.manual_seed(0)
    prior = SpikeAndSlab(4, gamma=0.8, slab_loc=1.0)
    z = prior.sample((100000,))
    spike_fraction = (z.abs() < 0.25).double().mean()
    assert abs(spike_fraction - (0.8 + 0.2 * (Normal(1.0, 1.0).cdf(torch.tensor(0.25)) - Normal(1.0, 1.0).cdf(torch.tensor(-0.25))))) < 0.01
    torch.testing.assert_close(z.mean(0), prior.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(z.var(0), prior.variance, atol=0.02, rtol=0)
    assert not prior.has_rsample
    with pytest.raises(NotImplementedError):
        prior.rsample()


# ------------------------------------------------------------------ Gaussian mixture


def test_mixture_log_prob_matches_torch_mixture_same_family():
    gmm, means, scales, weights = _mixture_f64(k=5, d=3)
    ref = MixtureSameFamily(Categorical(probs=weights), Independent(Normal(means, scales), 1))
    z = 2 * torch.randn(40, 3, dtype=F64)
    torch.testing.assert_close(gmm.log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(gmm.responsibilities(z).sum(-1), torch.ones(40, dtype=F64))


def test_mixture_density_integrates_to_one_in_two_dimensions():
    gmm, *_ = _mixture_f64(k=4, d=2, seed=3)
    gmm = GaussianMixture(gmm.means * 0.5, gmm.scales * 0.5, gmm.weights)  # keep mass inside the grid
    assert abs(_grid_integral_2d(gmm.log_prob) - 1) < 1e-4


def test_mixture_rsample_has_the_mixture_moments_and_gradients_to_the_means():
    torch.manual_seed(0)
    gmm, means, scales, weights = _mixture_f64(k=3, d=2, seed=1)
    z = gmm.rsample((200000,))
    torch.testing.assert_close(z.mean(0), gmm.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(z.var(0), gmm.variance, atol=0.02, rtol=0)
    m = means.clone().requires_grad_()
    GaussianMixture(m, scales, weights).rsample((10,)).sum().backward()
    torch.testing.assert_close(m.grad.sum(), torch.tensor(20.0, dtype=F64))  # each draw moves with its mean


def test_circle_means_are_the_anchor_pinwheel_means():
    got = {tuple(round(v, 6) + 0.0 for v in row) for row in circle_means(4).tolist()}
    assert got == {(0.0, -1.0), (0.0, 1.0), (1.0, 0.0), (-1.0, 0.0)}
    torch.testing.assert_close(circle_means(6, radius=2.0).norm(dim=1), torch.full((6,), 2.0))


def test_mixture_prior_module_learns_means_only_when_asked():
    fixed = GaussianMixturePrior(circle_means(4), scale=0.03**0.5)
    assert list(fixed.parameters()) == []
    torch.testing.assert_close(fixed().scales, torch.full((4, 2), 0.03**0.5))
    learned = GaussianMixturePrior(circle_means(4), learn_means=True, learn_scale=True, per_component_scale=True)
    assert {n for n, _ in learned.named_parameters()} == {"means", "log_scale"}
    learned().log_prob(torch.randn(8, 2)).sum().backward()
    assert learned.means.grad is not None and learned.log_scale.grad.shape == (4, 2)


# ------------------------------------------------------------------ Monte-Carlo KL


def test_monte_carlo_kl_matches_the_analytic_gaussian_kl():
    gen = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(6, 3, dtype=F64, generator=gen), 0.3 + torch.rand(6, 3, dtype=F64, generator=gen)
    prior = gaussian_prior(3, scale=torch.tensor([0.5, 1.0, 2.0], dtype=F64))
    want = torch_kl(Independent(Normal(loc, scale), 1), prior)
    got = monte_carlo_kl(loc, scale, prior, samples=200000, generator=gen)
    assert got.shape == (6,)
    torch.testing.assert_close(got, want, atol=0.02, rtol=0.005)  # MC error grows with the KL


def test_monte_carlo_kl_under_a_mixture_matches_an_independent_estimate():
    gmm, means, scales, weights = _mixture_f64(k=4, d=3, seed=2)
    ref_prior = MixtureSameFamily(Categorical(probs=weights), Independent(Normal(means, scales), 1))
    gen = torch.Generator().manual_seed(1)
    loc, scale = torch.randn(5, 3, dtype=F64, generator=gen), 0.2 + 0.5 * torch.rand(5, 3, dtype=F64, generator=gen)
    q = Independent(Normal(loc, scale), 1)
    torch.manual_seed(2)
    z = q.sample((100000,))
    independent = (q.log_prob(z) - ref_prior.log_prob(z)).mean(0)
    got = monte_carlo_kl(loc, scale, gmm, samples=100000, generator=gen)
    torch.testing.assert_close(got, independent, atol=0.03, rtol=0)
    # the anchor's bug, subtracting the joint log p once per dimension, is far from it
    buggy = (Normal(loc, scale).log_prob(z) - ref_prior.log_prob(z)[..., None]).sum(-1).mean(0)
    assert ((buggy - independent).abs() > 1.0).all()


def test_monte_carlo_kl_uses_given_draws_and_is_differentiable():
    loc = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    scale = torch.ones(2, 2, dtype=F64, requires_grad=True)
    draws = torch.zeros(1, 2, 2, dtype=F64)
    prior = gaussian_prior(2, scale=torch.tensor(2.0, dtype=F64))
    kl = monte_carlo_kl(loc, scale, prior, samples=draws)
    torch.testing.assert_close(kl, torch.full((2,), 2 * math.log(2.0), dtype=F64))  # log q(0) − log p(0)
    monte_carlo_kl(loc, scale, SpikeAndSlab(2, gamma=torch.tensor(0.5, dtype=F64)), samples=4).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: gaussian_prior(0), "dim"),
        (lambda: gaussian_prior(3, scale=-1.0), "scale"),
        (lambda: gaussian_prior(3, scale=[1.0, 2.0]), "scale"),
        (lambda: student_t_prior(2, df=0.0), "df"),
        (lambda: AnisotropicPrior(2, family="laplace"), "family"),
        (lambda: AnisotropicPrior(2, family="student-t"), "df"),
        (lambda: AnisotropicPrior(2, variances=[1.0, 0.0]), "variances"),
        (lambda: AnisotropicPrior(2, variance_scale=-1.0), "variance_scale"),
        (lambda: SpikeAndSlab(2, gamma=1.5), "gamma"),
        (lambda: SpikeAndSlab(2, spike_scale=0.0), "spike_scale"),
        (lambda: GaussianMixture(torch.zeros(4)), "means"),
        (lambda: GaussianMixture(torch.zeros(4, 2), scales=torch.ones(3, 2)), "scales"),
        (lambda: GaussianMixture(torch.zeros(4, 2), weights=torch.ones(4)), "weights"),
        (lambda: GaussianMixture(torch.zeros(4, 2), weights=torch.ones(3) / 3), "weights"),
        (lambda: GaussianMixturePrior(torch.zeros(4, 2), scale=torch.ones(4, 2)), "scale"),
        (lambda: circle_means(0), "k"),
    ],
)
def test_bad_arguments_raise_errors_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_monte_carlo_kl_rejects_mismatched_inputs():
    prior = gaussian_prior(3)
    with pytest.raises(ValueError, match="q_scale"):
        monte_carlo_kl(torch.zeros(2, 3), torch.ones(2, 2), prior)
    with pytest.raises(ValueError, match="event_shape"):
        monte_carlo_kl(torch.zeros(2, 3), torch.ones(2, 3), Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="event_shape"):
        monte_carlo_kl(torch.zeros(2, 4), torch.ones(2, 4), prior)
    with pytest.raises(ValueError, match="samples"):
        monte_carlo_kl(torch.zeros(2, 3), torch.ones(2, 3), prior, samples=0)
    with pytest.raises(ValueError, match="samples"):
        monte_carlo_kl(torch.zeros(2, 3), torch.ones(2, 3), prior, samples=torch.zeros(4, 3))
