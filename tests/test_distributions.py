"""ivae_ext.kl_divergence: a drop-in for torch.distributions.kl_divergence."""

import pytest
import torch
from torch.distributions import Exponential, Independent, Laplace, Normal
from torch.distributions import kl_divergence as torch_kl

import ivae_ext
from ivae_ext import kl_divergence

def _rand(*shape):
    return torch.randn(shape, dtype=torch.float64)


def _scale(*shape):
    return torch.rand(shape, dtype=torch.float64) + 0.3


@pytest.mark.parametrize("dist", [Normal, Laplace])
@pytest.mark.parametrize(
    "q_shape, p_shape",
    [((6, 4), (6, 4)), ((6, 4), (4,)), ((6, 4), ()), ((3, 6, 4), (4,)), ((3, 6, 4), (6, 1)), ((5,), (5,))],
)
def test_elementwise_kl_matches_torch(dist, q_shape, p_shape):
    q = dist(_rand(*q_shape), _scale(*q_shape))
    p = dist(_rand(*p_shape), _scale(*p_shape))
    got, want = kl_divergence(q, p), torch_kl(q, p)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dist", [Normal, Laplace])
@pytest.mark.parametrize("ndims", [1, 2])
def test_independent_sums_event_dims(dist, ndims):
    q = Independent(dist(_rand(3, 6, 4), _scale(3, 6, 4)), ndims)
    p = Independent(dist(_rand(3, 6, 4), _scale(3, 6, 4)), ndims)
    torch.testing.assert_close(kl_divergence(q, p), torch_kl(q, p), rtol=1e-12, atol=1e-12)


def test_standard_normal_prior_gradients_match_torch():
    mu = _rand(8, 3).requires_grad_()
    log_sigma = (0.3 * _rand(8, 3)).requires_grad_()
    prior = Independent(Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1)

    def grads(kl_fn):
        q = Independent(Normal(mu, log_sigma.exp()), 1)
        return torch.autograd.grad(kl_fn(q, prior).sum(), (mu, log_sigma))

    for got, want in zip(grads(kl_divergence), grads(torch_kl)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_routes_supported_pairs_to_the_fused_op(monkeypatch):
    calls = []
    real = ivae_ext.distributions.kl.expfam_kl
    monkeypatch.setattr(ivae_ext.distributions.kl, "expfam_kl", lambda *a: calls.append(a[4]) or real(*a))
    kl_divergence(Laplace(_rand(4, 2), _scale(4, 2)), Laplace(_rand(2), _scale(2)))
    assert calls == ["laplace"], "a Laplace pair must go through the fused op"


def test_other_families_fall_back_to_torch():
    q, p = Exponential(_scale(4)), Exponential(_scale(4))  # a family the op does not cover
    torch.testing.assert_close(kl_divergence(q, p), torch_kl(q, p))


def test_mixed_families_are_left_to_torch():
    q, p = Normal(_rand(4), _scale(4)), Laplace(_rand(4), _scale(4))
    torch.testing.assert_close(kl_divergence(q, p), torch_kl(q, p))
