"""ivae_ext.metrics: active units, KL per latent and decoder sensitivity on cases with known answers."""

from __future__ import annotations

import pytest
import torch

from ivae_ext.metrics import active_units, decoder_sensitivity, kl_per_latent
from ivae_ext.models import VAE


def _means_with_variances(variances, n=400, seed=0):
    """[n, d] whose columns have exactly the given sample variances (N - 1 denominator)."""
    gen = torch.Generator().manual_seed(seed)
    cols = []
    for v in variances:
        c = torch.randn(n, generator=gen, dtype=torch.float64)
        c = (c - c.mean()) / c.std()
        cols.append(c * v**0.5 + 3.0)
    return torch.stack(cols, 1)


def test_active_units_counts_latents_whose_mean_varies():
    means = _means_with_variances([1.0, 0.001, 0.5, 0.0, 0.0101])
    au = active_units((means, torch.zeros_like(means)))
    assert int(au) == 3, au.variances
    torch.testing.assert_close(au.variances, torch.tensor([1.0, 0.001, 0.5, 0.0, 0.0101], dtype=torch.float64))
    assert int(active_units((means, torch.zeros_like(means)), threshold=0.6)) == 1


def test_active_units_of_a_model_uses_its_posterior_means():
    torch.manual_seed(0)
    model = VAE(6, 3, hidden_dim=8).double()
    x = torch.randn(50, 6, dtype=torch.float64)
    loc, log_scale = model.encode(x)
    from_model = active_units(model, x, threshold=1e-4)
    from_pair = active_units((loc.detach(), log_scale.detach()), threshold=1e-4)
    assert from_model.count == from_pair.count
    torch.testing.assert_close(from_model.variances, from_pair.variances)


def test_kl_per_latent_matches_torch_distributions():
    torch.manual_seed(1)
    loc, log_scale = torch.randn(30, 4, dtype=torch.float64), 0.3 * torch.randn(30, 4, dtype=torch.float64)
    q = torch.distributions.Normal(loc, log_scale.exp())
    want = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(kl_per_latent((loc, log_scale)), want)
    collapsed = kl_per_latent((torch.zeros(5, 2), torch.zeros(5, 2)))
    assert torch.equal(collapsed, torch.zeros(2, dtype=torch.float64)), "q = prior has zero KL"


def test_sensitivity_of_a_linear_decoder_is_its_column_norms():
    weight = torch.tensor([[1.0, 0.0, 3.0], [2.0, 0.0, -4.0]], dtype=torch.float64)  # D = 2, d = 3
    z = torch.randn(17, 3, dtype=torch.float64)
    got = decoder_sensitivity(lambda t: t @ weight.T, z, chunk_size=5)
    torch.testing.assert_close(got, weight.norm(dim=0))
    assert got[1] == 0, "an ignored latent has zero sensitivity"


def test_sensitivity_matches_the_jacobian_of_a_nonlinear_decoder():
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(3, 7), torch.nn.Tanh(), torch.nn.Linear(7, 5)).double()
    z = torch.randn(9, 3, dtype=torch.float64)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda t: net(t[None])[0], p) for p in z])  # [n, D, d]
    torch.testing.assert_close(decoder_sensitivity(net, z, chunk_size=4), jac.norm(dim=1).mean(0))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: active_units((torch.zeros(1, 2), torch.zeros(1, 2))), ValueError, r"needs at least 2 points, got 1"),
        (lambda: active_units((torch.zeros(4, 2), torch.zeros(4, 2)), threshold=-1), ValueError, r"threshold must be a number >= 0"),
        (lambda: active_units((torch.zeros(4, 2), torch.zeros(4, 3))), ValueError, r"must have the shape of"),
        (lambda: decoder_sensitivity(lambda t: t, torch.zeros(3)), ValueError, r"z must be a tensor \[n, d\]"),
        (lambda: decoder_sensitivity(lambda t: t.sum(-1), torch.zeros(3, 2)), ValueError, r"decode must map \[n, d\] to \[n, D\]"),
        (lambda: decoder_sensitivity(lambda t: t, torch.zeros(3, 2, dtype=torch.int64)), TypeError, r"floating-point"),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()
