"""Whole-set mutual information I(x; z) and total correlation TC(z) (ivae_ext.metrics.information).

Correctness: exactly 0 for a posterior that ignores x; the closed form of a linear-Gaussian
encoder; exactly log N and (d − 1)·log N when the posteriors do not overlap (the estimators'
upper bounds); chunking does not change the result; the model path equals the posteriors path.
"""

import math

import pytest
import torch
from torch import nn

from ivae_ext.metrics import MIEstimate, TCEstimate, mutual_information, total_correlation
from ivae_ext.models import IVAE, VAE

FAMILIES = ("gaussian", "laplace")
F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_posteriors(n, d, seed=0, dtype=F64):
    g = gen(seed)
    loc = torch.randn(n, d, generator=g, dtype=F64)
    log_scale = -0.5 + 0.4 * torch.randn(n, d, generator=g, dtype=F64)
    return loc.to(dtype), log_scale.to(dtype)


# --- posteriors that ignore x: exactly 0 -------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_posterior_that_ignores_x_has_zero_mi_and_tc(family):
    n, d = 500, 3
    loc = torch.tensor([0.3, -1.0, 2.0], dtype=F64).expand(n, d).clone()
    log_scale = torch.tensor([-0.2, 0.4, 0.0], dtype=F64).expand(n, d).clone()
    mi = mutual_information((loc, log_scale), family=family, samples=2, generator=gen(0))
    tc = total_correlation((loc, log_scale), family=family, samples=2, generator=gen(0))
    assert isinstance(mi, MIEstimate) and isinstance(tc, TCEstimate)
    # every term is log q(z|x) − log q(z) with q(z) = q(z|x): 0 per draw, not only on average
    assert abs(mi.value) < 1e-6 and abs(float(mi)) < 1e-6
    assert mi.stderr < 1e-6
    # q(z) is the one factorized component: log q(z) = Σ_k log q(z_k) per draw
    assert abs(tc.value) < 1e-6 and tc.stderr < 1e-6
    assert (mi.n, mi.samples) == (n, 2)
    assert mi.upper_bound == pytest.approx(math.log(n)) and tc.upper_bound == pytest.approx(2 * math.log(n))


# --- linear-Gaussian encoder: closed form ------------------------------------------------------


def test_linear_gaussian_encoder_matches_closed_form():
    # x ~ N(0, I_2), q(z|x) = N(Ax, σ²I): the population aggregate posterior is N(0, S), S = AAᵀ + σ²I,
    # I(x; z) = ½ log det S − ½ d log σ² = 1.674 nats and TC = ½ Σ_k log S_kk − ½ log det S = 0.319
    # nats (A mixes the dimensions).
    # Tolerance 0.05 nats: over data/draw seeds 0–11 at N = 5000 the errors of both estimates had a
    # spread of ≈ 0.015 (MC stderr given the data 0.017 for the MI, 0.010 for the TC; the rest is
    # the draw of the N points), which halves at N = 20 000; the estimators' own bias,
    # ≈ (E[q(z|x)/q(z)] − 1)/(2N), is below 1e-3 here. 0.05 is > 6 spreads, and still catches a
    # wrong constant (e.g. a log N or a factor 2 on log σ is off by ≥ 0.3).
    n, d, sigma = 20_000, 2, 0.5
    A = torch.tensor([[1.0, 0.8], [0.3, 1.2]], dtype=F64)
    S = A @ A.T + sigma**2 * torch.eye(d, dtype=F64)
    mi_true = 0.5 * torch.logdet(S).item() - 0.5 * d * math.log(sigma**2)
    tc_true = 0.5 * torch.log(torch.diagonal(S)).sum().item() - 0.5 * torch.logdet(S).item()
    assert mi_true == pytest.approx(1.6736, abs=1e-4) and tc_true == pytest.approx(0.3192, abs=1e-4)

    x = torch.randn(n, d, generator=gen(0), dtype=F64)
    loc, log_scale = x @ A.T, torch.full((n, d), math.log(sigma), dtype=F64)
    mi = mutual_information((loc, log_scale), generator=gen(100))
    tc = total_correlation((loc, log_scale), generator=gen(100))
    assert abs(mi.value - mi_true) < 0.05, (mi, mi_true)
    assert abs(tc.value - tc_true) < 0.05, (tc, tc_true)
    assert mi.stderr < 0.015 and tc.stderr < 0.015
    # the parts: E log q(z|x) = −H(N(·, σ²I)) exactly in expectation
    neg_entropy = -0.5 * d * math.log(2 * math.pi * math.e * sigma**2)
    assert abs(mi.log_q_z_given_x - neg_entropy) < 0.05
    assert mi.value == pytest.approx(mi.log_q_z_given_x - mi.log_q_z)
    assert tc.value == pytest.approx(tc.log_q_z - tc.log_q_z_marginals)
    # same draws (same generator seed): the two estimates share log q(z)
    assert tc.log_q_z == pytest.approx(mi.log_q_z, abs=1e-9)


# --- non-overlapping posteriors: the upper bounds ---------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_non_overlapping_posteriors_saturate_at_the_upper_bounds(family):
    # every coordinate of every point distinct by ≥ 1, scales 1e-4: each z_i (and each z_ik)
    # singles out its own component, so MI = log N and TC = (d − 1) log N exactly (the bias of a
    # plug-in estimate with too few points, whatever the population's MI and TC)
    n, d = 64, 3
    loc = torch.stack([torch.randperm(n, generator=gen(k)).to(F64) for k in range(d)], dim=1)
    log_scale = torch.full((n, d), math.log(1e-4), dtype=F64)
    mi = mutual_information((loc, log_scale), family=family, generator=gen(1))
    tc = total_correlation((loc, log_scale), family=family, generator=gen(1))
    assert mi.value == pytest.approx(math.log(n), abs=1e-6) and mi.value <= mi.upper_bound + 1e-12
    assert tc.value == pytest.approx((d - 1) * math.log(n), abs=1e-6) and tc.value <= tc.upper_bound + 1e-12


def test_a_single_point_has_zero_mi():
    loc, log_scale = random_posteriors(1, 3)
    mi = mutual_information((loc, log_scale), samples=3, generator=gen(0))
    assert mi.value == pytest.approx(0.0, abs=1e-12) and mi.upper_bound == 0.0
    one_draw = mutual_information((loc, log_scale), generator=gen(0))
    assert math.isnan(one_draw.stderr)  # one draw has no standard error


# --- chunking, seeding, dtype ------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fn", [mutual_information, total_correlation], ids=["mi", "tc"])
def test_chunked_equals_unchunked(fn, family):
    loc, log_scale = random_posteriors(300, 3, seed=1)
    whole = fn((loc, log_scale), family=family, samples=2, chunk_size=4096, generator=gen(5))
    for chunk in (1, 7, 300):
        part = fn((loc, log_scale), family=family, samples=2, chunk_size=chunk, generator=gen(5))
        assert part.value == pytest.approx(whole.value, abs=1e-6)
        assert part.stderr == pytest.approx(whole.stderr, abs=1e-6)
    other_seed = fn((loc, log_scale), family=family, samples=2, generator=gen(6))
    assert other_seed.value != whole.value


def test_float32_matches_float64():
    # the draws are made in float64 whatever the dtype: the same seed gives the same estimate
    loc, log_scale = random_posteriors(400, 2, seed=2)
    mi64 = mutual_information((loc, log_scale), generator=gen(0))
    mi32 = mutual_information((loc.float(), log_scale.float()), generator=gen(0))
    tc64 = total_correlation((loc, log_scale), generator=gen(0))
    tc32 = total_correlation((loc.float(), log_scale.float()), generator=gen(0))
    assert mi32.value == pytest.approx(mi64.value, abs=1e-4)
    assert tc32.value == pytest.approx(tc64.value, abs=1e-4)


def test_global_rng_is_used_without_a_generator():
    loc, log_scale = random_posteriors(100, 2, seed=3)
    torch.manual_seed(11)
    a = mutual_information((loc, log_scale))
    torch.manual_seed(11)
    b = mutual_information((loc, log_scale))
    assert a.value == b.value


# --- models ------------------------------------------------------------------------------------


def one_hot_u(n, m, seed=0):
    return nn.functional.one_hot(torch.randint(0, m, (n,), generator=gen(seed)), m).to(F64)


@pytest.mark.parametrize("fn", [mutual_information, total_correlation], ids=["mi", "tc"])
def test_vae_model_path_equals_posteriors_path(fn):
    torch.manual_seed(0)
    model = VAE(data_dim=4, latent_dim=3, hidden_dim=8).double()
    x = torch.randn(250, 4, generator=gen(1), dtype=F64)
    with torch.no_grad():
        loc, log_scale = model.encode(x)
    expected = fn((loc, log_scale), chunk_size=64, generator=gen(2))
    got = fn(model, x, chunk_size=64, generator=gen(2))
    assert got.value == pytest.approx(expected.value, abs=1e-12)
    assert fn(model, {"x": x}, chunk_size=64, generator=gen(2)).value == pytest.approx(expected.value, abs=1e-12)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("prior", FAMILIES)
def test_ivae_model_path_needs_u_and_uses_the_posterior_family(prior):
    torch.manual_seed(0)
    model = IVAE(data_dim=4, latent_dim=2, aux_dim=3, hidden_dim=8, prior=prior).double()
    x = torch.randn(200, 4, generator=gen(1), dtype=F64)
    u = one_hot_u(200, 3)
    with torch.no_grad():
        loc, log_scale = model.encode(x, u)
    expected = mutual_information((loc, log_scale), family=prior, chunk_size=50, generator=gen(2))
    got = mutual_information(model, x, u=u, chunk_size=50, generator=gen(2))
    batch = mutual_information(model, {"x": x, "u": u}, chunk_size=50, generator=gen(2))
    assert got.value == pytest.approx(expected.value, abs=1e-12)
    assert batch.value == pytest.approx(expected.value, abs=1e-12)
    with pytest.raises(ValueError, match="IVAE.encode needs u"):
        mutual_information(model, x)
    other = "gaussian" if prior == "laplace" else "laplace"
    with pytest.raises(ValueError, match=f"family='{other}' contradicts the model's posterior family '{prior}'"):
        total_correlation(model, x, u=u, family=other)


def test_full_covariance_model_is_refused():
    model = VAE(data_dim=4, latent_dim=2, hidden_dim=8, posterior_cov="full")
    with pytest.raises(ValueError, match="posterior_cov='full'; these estimators need a factorized posterior"):
        mutual_information(model, torch.randn(10, 4))


# --- errors ------------------------------------------------------------------------------------


def _pair(n=5, d=2):
    return random_posteriors(n, d)


@pytest.mark.parametrize("fn", [mutual_information, total_correlation], ids=["mi", "tc"])
def test_error_messages_name_the_function_and_argument(fn):
    name = fn.__name__
    loc, log_scale = _pair()
    cases = [
        ((loc,), {}, TypeError, "posteriors must be a pair"),
        ((torch.randn(3),), {}, TypeError, "posteriors must be a pair"),
        ((nn.Linear(2, 2), torch.randn(3, 2)), {}, TypeError,
         "posteriors must be a pair .* or a model with an encode method, got Linear"),
        (((loc, log_scale, loc),), {}, ValueError, "posteriors must be a pair .* got a sequence of length 3"),
        (((loc[0], log_scale[0]),), {}, ValueError, r"q_loc \(posteriors\[0\]\) must have shape \[N, d\], got \[2\]"),
        (((loc, log_scale[:, :1]),), {}, ValueError,
         r"q_log_scale \(posteriors\[1\]\) must have the shape of q_loc \(posteriors\[0\]\), \[5, 2\], got \[5, 1\]"),
        (((loc[:0], log_scale[:0]),), {}, ValueError,
         r"the posteriors must hold at least one point \(N >= 1\), got shape \[0, 2\]"),
        (((loc[:, :0], log_scale[:, :0]),), {}, ValueError,
         r"the posteriors must have at least one latent dimension \(d >= 1\)"),
        (((loc.long(), log_scale),), {}, TypeError, r"q_loc \(posteriors\[0\]\) must be float32 or float64"),
        (((loc, log_scale.float()),), {}, ValueError,
         r"q_loc \(posteriors\[0\]\) and q_log_scale \(posteriors\[1\]\) must have the same dtype and device"),
        (((loc, [[0.0, 0.0]] * 5),), {}, TypeError, r"q_log_scale \(posteriors\[1\]\) must be a torch.Tensor"),
        (((loc, log_scale.index_fill(0, torch.tensor([3]), float("nan"))),), {}, ValueError,
         r"q_log_scale \(posteriors\[1\]\) has non-finite entries"),
        (((loc, log_scale),), {"family": "cauchy"}, ValueError,
         r"family must be one of \(.gaussian., .laplace.\) \(or None\), got .cauchy."),
        (((loc, log_scale),), {"samples": 0}, ValueError, "samples must be >= 1, got 0"),
        (((loc, log_scale),), {"samples": 1.5}, TypeError, "samples must be an int"),
        (((loc, log_scale),), {"chunk_size": 0}, ValueError, "chunk_size must be >= 1, got 0"),
        (((loc, log_scale),), {"chunk_size": True}, TypeError, "chunk_size must be an int"),
        (((loc, log_scale), torch.randn(5, 3)), {}, ValueError, "x and u are for a model"),
        (((loc, log_scale),), {"generator": 0}, TypeError, "generator must be a torch.Generator"),
    ]
    for args, kwargs, error, message in cases:
        with pytest.raises(error, match=f"{name}: {message}"):
            fn(*args, **kwargs)


def test_model_input_errors():
    torch.manual_seed(0)
    vae = VAE(data_dim=4, latent_dim=2, hidden_dim=8)
    ivae = IVAE(data_dim=4, latent_dim=2, aux_dim=3, hidden_dim=8)
    x, u = torch.randn(10, 4), one_hot_u(10, 3).float()
    cases = [
        ((vae,), {}, r"x \(the data, \[N, D\] or a batch dict\) is required with a model"),
        ((vae, x[0]), {}, r"x must be a tensor \[N, D\], got \[4\]"),
        ((vae, x[:0]), {}, r"x must hold at least one point"),
        ((vae, {"u": u}), {}, "the batch dict x must hold 'x'"),
        ((ivae, x), {"u": u[:5]}, r"u must have one row per row of x \(10\), got shape \[5, 3\]"),
        ((ivae, {"x": x, "u": u}), {"u": u}, "u is given twice"),
        ((ivae, {"x": x}), {}, "IVAE.encode needs u"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=f"mutual_information: {message}"):
            mutual_information(*args, **kwargs)
