"""The IVAE and VAE models: interface, loss decreases, fused KL vs reference."""

import math
import warnings

import pytest
import torch

import ivae_ext
from ivae_ext.data import make_nonlinear_ica
from ivae_ext.models import IVAE, VAE
from ivae_ext.models import objectives
from ivae_ext.models.nets import log_density
from ivae_ext.training import fit

warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*compiled extension.*")


def _tiny(seed=0):
    d = make_nonlinear_ica(n_sources=2, n_segments=4, per_segment=64, mixing_layers=2, seed=seed)
    return torch.as_tensor(d.x), torch.as_tensor(d.u)


@pytest.mark.parametrize("objective", ["weighted", "elbo"])
@pytest.mark.parametrize("prior", ["gaussian", "laplace"])
def test_ivae_interface(objective, prior):
    torch.manual_seed(0)
    x, u = _tiny()
    m = IVAE(2, 2, 4, hidden_dim=8, prior=prior, objective=objective)
    terms = m.loss({"x": x[:16], "u": u[:16]})
    assert terms["loss"].shape == () and torch.isfinite(terms["loss"])
    assert "recon" in terms and ("kl" in terms if objective == "elbo" else "dwkl" in terms)
    loc, log_scale = m.encode(x[:5], u[:5])
    assert loc.shape == log_scale.shape == (5, 2)
    assert m.decode(loc).shape == (5, 2)
    xs, zs = m.sample(u[:7])
    assert xs.shape == (7, 2) and zs.shape == (7, 2)


def test_vae_interface():
    torch.manual_seed(0)
    x, _ = _tiny()
    m = VAE(2, 2, hidden_dim=8)
    terms = m.loss({"x": x[:16]})
    assert set(terms) >= {"loss", "recon", "kl"} and torch.isfinite(terms["loss"])
    xs, zs = m.sample(3)
    assert xs.shape == (3, 2) and zs.shape == (3, 2)


def test_elbo_with_mismatched_posterior_family_is_an_error():
    with pytest.raises(ValueError, match="no laplace posterior under a gaussian prior"):
        IVAE(2, 2, 4, prior="gaussian", posterior="laplace", objective="elbo")
    with pytest.raises(ValueError, match="full-covariance posterior needs objective='elbo' and posterior='gaussian'"):
        IVAE(2, 2, 4, prior="laplace", posterior="laplace", posterior_cov="full")


def test_gaussian_laplace_kl_matches_numerical_integration():
    torch.manual_seed(0)
    q_loc, q_ls = torch.randn(6, 3, dtype=torch.float64), 0.5 * torch.randn(6, 3, dtype=torch.float64)
    p_loc, p_ls = torch.randn(6, 3, dtype=torch.float64), 0.5 * torch.randn(6, 3, dtype=torch.float64)
    kl = objectives.gaussian_laplace_kl(q_loc, q_ls, p_loc, p_ls)
    # KL = ∫ q (log q − log p) on a fine grid around q's mass
    t = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    z = q_loc[..., None] + torch.exp(q_ls)[..., None] * t
    q = torch.distributions.Normal(q_loc[..., None], torch.exp(q_ls)[..., None])
    p = torch.distributions.Laplace(p_loc[..., None], torch.exp(p_ls)[..., None])
    integrand = torch.exp(q.log_prob(z)) * (q.log_prob(z) - p.log_prob(z))
    numeric = torch.trapezoid(integrand, z, dim=-1)
    torch.testing.assert_close(kl, numeric, rtol=0, atol=1e-7)
    args = [a.clone().requires_grad_(True) for a in (q_loc, q_ls, p_loc, p_ls)]
    assert torch.autograd.gradcheck(objectives.gaussian_laplace_kl, args)


def test_full_covariance_gaussian_posterior_under_a_laplace_prior_trains():
    torch.manual_seed(0)
    x, u = _tiny()
    m = IVAE(2, 2, 4, hidden_dim=16, prior="laplace", posterior="gaussian", posterior_cov="full")
    before = m.loss({"x": x, "u": u})["loss"].item()
    fit(m, x, u, epochs=15, batch_size=32, lr=3e-3, seed=0, progress=False, schedule="none")
    torch.manual_seed(1)
    assert m.loss({"x": x, "u": u})["loss"].item() < before - 0.5


@pytest.mark.parametrize("objective", ["weighted", "elbo"])
def test_loss_decreases_on_a_tiny_problem(objective):
    torch.manual_seed(0)
    x, u = _tiny()
    m = IVAE(2, 2, 4, hidden_dim=16, objective=objective, prior_mean=False)
    before = m.loss({"x": x, "u": u})["loss"].item()
    fit(m, x, u, epochs=15, batch_size=32, lr=3e-3, seed=0, progress=False, schedule="none")
    torch.manual_seed(1)
    after = m.loss({"x": x, "u": u})["loss"].item()
    assert after < before - 0.1 * abs(before), f"{objective}: loss {before:.3f} -> {after:.3f}"


def test_vae_loss_decreases():
    torch.manual_seed(0)
    x, _ = _tiny()
    m = VAE(2, 2, hidden_dim=16)
    before = m.loss({"x": x})["loss"].item()
    fit(m, x, epochs=15, batch_size=32, lr=3e-3, seed=0, progress=False, schedule="none")
    torch.manual_seed(1)
    after = m.loss({"x": x})["loss"].item()
    assert after < before, f"VAE loss {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("prior", ["gaussian", "laplace"])
def test_fused_and_reference_kl_give_the_same_loss_and_gradients(monkeypatch, prior):
    torch.manual_seed(0)
    x, u = _tiny()
    m = IVAE(2, 2, 4, hidden_dim=8, prior=prior, objective="elbo").double()
    batch = {"x": x[:32].double(), "u": u[:32].double()}

    def run():
        torch.manual_seed(3)
        m.zero_grad()
        loss = m.loss(batch)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    fused_loss, fused_grads = run()
    monkeypatch.setattr(objectives, "expfam_kl", ivae_ext.reference.expfam_kl)
    ref_loss, ref_grads = run()
    torch.testing.assert_close(fused_loss, ref_loss, rtol=1e-10, atol=1e-10)
    for g1, g2 in zip(fused_grads, ref_grads):
        torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)


def _pairwise_minibatch_log_q(z, q_loc, q_log_scale, family, dataset_size):
    """minibatch_log_q as written before the fused op: the [B, B, d] tensor, then logsumexp."""
    pairwise = log_density(z.unsqueeze(1), q_loc.unsqueeze(0), q_log_scale.unsqueeze(0), family)
    log_norm = math.log(z.shape[0] * max(dataset_size, 1))
    return torch.logsumexp(pairwise.sum(-1), dim=1) - log_norm, (torch.logsumexp(pairwise, dim=1) - log_norm).sum(-1)


@pytest.mark.parametrize("prior", ["gaussian", "laplace"])
def test_weighted_objective_is_unchanged_by_the_fused_aggregate_posterior(monkeypatch, prior):
    """The weighted objective's log q(z) terms now go through aggregate_log_q: same loss, same
    gradients as the pairwise estimator it replaced."""
    torch.manual_seed(0)
    x, u = _tiny()
    m = IVAE(2, 2, 4, hidden_dim=8, prior=prior, objective="weighted").double()
    m.dataset_size = 256
    batch = {"x": x[:48].double(), "u": u[:48].double()}

    def run():
        torch.manual_seed(3)
        m.zero_grad()
        terms = m.loss(batch)
        terms["loss"].backward()
        return {k: v.detach() for k, v in terms.items()}, [p.grad.clone() for p in m.parameters()]

    fused_terms, fused_grads = run()
    monkeypatch.setattr(objectives, "minibatch_log_q", _pairwise_minibatch_log_q)
    ref_terms, ref_grads = run()
    for name in ("loss", "mi", "tc", "dwkl"):
        torch.testing.assert_close(fused_terms[name], ref_terms[name], rtol=1e-10, atol=1e-10, msg=lambda e: f"{name}: {e}")
    for g1, g2 in zip(fused_grads, ref_grads):
        torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)


def test_weighted_objective_with_unit_weights_matches_the_elbo_in_expectation():
    """With a=b=c=d=1 the decomposition telescopes to log p(x|z) + log p(z|u) − log q(z|x,u)."""
    torch.manual_seed(0)
    x, u = _tiny()
    w = IVAE(2, 2, 4, hidden_dim=8, objective="weighted", weights=(1, 1, 1, 1)).double()
    e = IVAE(2, 2, 4, hidden_dim=8, objective="elbo").double()
    e.load_state_dict(w.state_dict())
    batch = {"x": x.double(), "u": u.double()}
    torch.manual_seed(0)
    lw = torch.stack([w.loss(batch)["loss"] for _ in range(200)]).mean()
    torch.manual_seed(0)
    le = torch.stack([e.loss(batch)["loss"] for _ in range(200)]).mean()
    assert abs(lw.item() - le.item()) < 0.02 * abs(le.item()) + 0.05


def test_full_covariance_kl_matches_torch_distributions():
    torch.manual_seed(0)
    x, u = _tiny()
    m = IVAE(2, 3, 4, hidden_dim=8, posterior_cov="full").double()
    torch.nn.init.normal_(m.encoder_tril.net[-1].weight)
    xb, ub = x[:10].double(), u[:10].double()
    loc, log_diag, chol = m._posterior(xb, ub)
    p_loc, p_log_scale = m.prior_params(ub)
    q = torch.distributions.MultivariateNormal(loc, scale_tril=chol)
    p = torch.distributions.MultivariateNormal(p_loc, scale_tril=torch.diag_embed(p_log_scale.exp()))
    expected = torch.distributions.kl_divergence(q, p).mean()
    q_log_scale = 0.5 * torch.log((chol * chol).sum(-1))
    got = objectives.elbo_objective(
        torch.zeros(10, dtype=torch.float64), loc, q_log_scale, p_loc, p_log_scale, "gaussian",
        kl_extra=(q_log_scale - log_diag).sum(-1),
    )["kl"]
    torch.testing.assert_close(got, expected)
    assert m.loss({"x": xb, "u": ub})["loss"].isfinite()


def test_vae_full_covariance_runs_and_its_kl_is_not_below_the_diagonal_part():
    torch.manual_seed(0)
    x, _ = _tiny()
    m = VAE(2, 2, hidden_dim=8, posterior_cov="full")
    torch.nn.init.normal_(m.encoder_tril.net[-1].weight)
    terms = m.loss({"x": x[:16]})
    assert torch.isfinite(terms["loss"]) and terms["kl"] > 0


@pytest.mark.parametrize("activation", ["lrelu", "elu", "silu", "tanh"])
def test_activation_and_lookup_table_prior(activation):
    torch.manual_seed(0)
    x, u = _tiny()
    m = IVAE(2, 2, 4, hidden_dim=8, activation=activation, prior_layers=1, posterior_cov="full")
    assert len([l for l in m.prior_net.net if isinstance(l, torch.nn.Linear)]) == 1  # a table for one-hot u
    assert m.config()["prior_layers"] == 1
    assert torch.isfinite(m.loss({"x": x[:16], "u": u[:16]})["loss"])
    v = VAE(2, 2, hidden_dim=8, activation=activation)
    assert torch.isfinite(v.loss({"x": x[:16]})["loss"])


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError, match="activation"):
        IVAE(2, 2, 4, activation="relu6")
