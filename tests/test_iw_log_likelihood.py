"""ivae_ext.metrics.iw_log_likelihood on a linear-Gaussian model, where log p(x) is known."""

from __future__ import annotations


import pytest
import torch

from ivae_ext.metrics import iw_log_likelihood

# z ~ N(0, I_2), x | z ~ N(W z + b, s² I_3)  =>  x ~ N(b, W Wᵀ + s² I), posterior Gaussian.
W = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, 0.1]], dtype=torch.float64)
B = torch.tensor([0.2, -1.0, 0.5], dtype=torch.float64)
S = 0.4


def log_likelihood(x, z):
    return torch.distributions.Normal(z @ W.T + B, S).log_prob(x).sum(-1)


def exact_log_px(x):
    cov = W @ W.T + S**2 * torch.eye(3, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(B, cov).log_prob(x)


def exact_posterior_diagonal(x):
    """Mean and per-dimension log σ of the true posterior's marginals (it is correlated)."""
    precision = torch.eye(2, dtype=torch.float64) + W.T @ W / S**2
    cov = torch.linalg.inv(precision)
    mean = (x - B) @ W @ cov.T / S**2
    return mean, 0.5 * torch.log(torch.diagonal(cov)).expand_as(mean)


def test_exact_for_any_k_when_q_is_the_posterior():
    # with a diagonal W the posterior factorizes, so the factorized q is exact
    w_diag = torch.tensor([[1.5, 0.0], [0.0, 0.5], [0.0, 0.0]], dtype=torch.float64)
    x = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def lik(x_, z):
        return torch.distributions.Normal(z @ w_diag.T + B, S).log_prob(x_).sum(-1)

    precision = 1.0 + (w_diag**2).sum(0) / S**2  # [2]
    mean = ((x - B) @ w_diag) / S**2 / precision
    log_scale = (-0.5 * torch.log(precision)).expand_as(mean)
    cov = w_diag @ w_diag.T + S**2 * torch.eye(3, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(B, cov).log_prob(x)
    for k in (1, 7):
        est = iw_log_likelihood(lik, x, mean, log_scale, samples=k, chunk_size=6,
                                generator=torch.Generator().manual_seed(k))
        torch.testing.assert_close(est.per_point, exact, rtol=1e-10, atol=1e-10)


def test_approaches_log_px_from_below_as_k_grows():
    x = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mean, log_scale = exact_posterior_diagonal(x)
    log_scale = log_scale + 0.5  # a mean-field q twice too wide: the bound is loose at K = 1
    exact = float(exact_log_px(x).mean())
    values = [float(iw_log_likelihood(log_likelihood, x, mean, log_scale, samples=k,
                                      generator=torch.Generator().manual_seed(2))) for k in (1, 10, 500)]
    assert values[0] < values[1] < values[2] <= exact + 0.01, (values, exact)
    assert exact - values[0] > 0.2, f"K = 1 should be a loose bound here: {values[0]} vs {exact}"
    assert exact - values[2] < 0.02, f"K = 500 should be within 0.02 nats of log p(x): {values[2]} vs {exact}"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"samples": 0}, r"samples must be an int >= 1, got 0"),
        ({"family": "cauchy"}, r"family must be one of"),
        ({"q_loc": torch.zeros(3, 2, dtype=torch.float64)}, r"q_loc and q_log_scale must both have shape \[N, d\] with x's N = 4"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    args = {"x": torch.zeros(4, 3, dtype=torch.float64), "q_loc": torch.zeros(4, 2, dtype=torch.float64),
            "q_log_scale": torch.zeros(4, 2, dtype=torch.float64)}
    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in args}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        iw_log_likelihood(log_likelihood, args["x"], args["q_loc"], args["q_log_scale"], **options)
