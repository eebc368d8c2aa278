"""LIDVAE and its MLP-decoder baseline (ivae_ext.models.lidvae, ivae_ext.models.latent_vae):
the injective lift and the decoder's Jacobian bound, convexity of the potentials, the likelihoods,
priors and losses against torch.distributions, training, exact resume, and bad input."""

import math
import re
import warnings

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from ivae_ext import reference
from ivae_ext.data.images import check_bernoulli_data
from ivae_ext.models.latent_vae import MLPVAE, LatentVAE, bernoulli_log_lik
from ivae_ext.models.lidvae import BrenierDecoder, InjectiveLift, LIDVAE
from ivae_ext.training import fit

warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*compiled extension.*")

D, d = 12, 3  # data and latent dimension of the small models
SMALL = dict(encoder_hidden=32, encoder_layers=2, icnn_hidden_latent=16, icnn_hidden_data=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: with a second intra-op thread on a busy 2-core machine every op waits
    for the pool (measured: fit of 48 steps 9 s with 2 threads, 0.06 s with 1). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lidvae(seed=0, **kwargs):
    torch.manual_seed(seed)
    return LIDVAE(D, d, **{**SMALL, **kwargs})


def _mlpvae(seed=0, **kwargs):
    torch.manual_seed(seed)
    return MLPVAE(D, d, **{"encoder_hidden": 32, "encoder_layers": 2, "decoder_hidden": 32, "decoder_layers": 2,
                           **kwargs})


def _binary(n=64, seed=0, dtype=torch.float32):
    """n binary vectors of dimension D, each coordinate on with probability 0.1 or 0.9 (fixed per
    coordinate), so a model has something to learn beyond a coin flip."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.where(torch.arange(D) % 2 == 0, 0.9, 0.1)
    return torch.bernoulli(p.expand(n, D), generator=gen).to(dtype)


def _perturb_(module, scale=1.0, seed=0, names=None):
    """Add N(0, scale²) noise to every parameter (or those whose name ends with one of `names`)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if names is None or name.split(".")[-1] in names:
                p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))


def _points(n, dim, seed=1, scale=1.5):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, dim, generator=gen, dtype=torch.float64)


# -- 1. the lift and the decoder's injectivity ---------------------------------------------------


def test_identity_lift_is_the_zero_padded_identity_with_unit_singular_values():
    lift = InjectiveLift(3, 7, "identity").double()
    expected = torch.zeros(7, 3, dtype=torch.float64)
    expected[:3, :3] = torch.eye(3, dtype=torch.float64)
    assert torch.equal(lift.weight(), expected)
    assert torch.equal(lift.singular_values(), torch.ones(3, dtype=torch.float64))
    v = _points(5, 3)
    assert torch.equal(lift(v), torch.cat([v, torch.zeros(5, 4, dtype=torch.float64)], dim=1))
    assert list(lift.parameters()) == []


def test_learned_lift_singular_values_are_min_plus_softplus_and_the_weight_has_them():
    torch.manual_seed(0)
    s_min = 0.3
    lift = InjectiveLift(4, 9, "learned", min_singular_value=s_min).double()
    # at init: random orthonormal U, V and singular values max(1, s_min + 0.5) = 1 (up to the float32
    # rounding of the raw value, stored before .double()); U's columns spread over all outputs
    torch.testing.assert_close(lift.singular_values(), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-6)
    W0 = lift.weight().detach()
    assert (W0[4:].abs().sum() > 0.1), "the learned lift must not start as the zero-padded identity"
    _perturb_(lift, scale=1.0, seed=3)
    with torch.no_grad():
        lift.raw_s.copy_(torch.tensor([2.0, -1.0, 0.5, -3.0], dtype=torch.float64))
    expected = torch.sort(s_min + torch.nn.functional.softplus(lift.raw_s.detach()), descending=True).values
    torch.testing.assert_close(lift.singular_values().detach(), expected, rtol=0, atol=0)
    W = lift.weight().detach()
    assert W.shape == (9, 4)
    torch.testing.assert_close(torch.linalg.svdvals(W), expected, rtol=1e-12, atol=1e-12)
    # U (QR of raw_u, signs fixed) has orthonormal columns; V is orthogonal
    from ivae_ext.models.lidvae import _orthonormal_columns

    U, V = _orthonormal_columns(lift.raw_u.detach()), _orthonormal_columns(lift.raw_v.detach())
    torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(V.T @ V, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    s = s_min + torch.nn.functional.softplus(lift.raw_s.detach())
    torch.testing.assert_close(W, (U * s) @ V.T, rtol=0, atol=1e-12)
    # forward is the affine map W v + c
    v = _points(6, 4)
    torch.testing.assert_close(lift(v).detach(), v @ W.T + lift.bias.detach(), rtol=0, atol=1e-12)


def test_learned_lift_singular_values_stay_above_the_minimum_for_very_negative_raw_values():
    s_min = 0.25
    lift = InjectiveLift(3, 5, "learned", min_singular_value=s_min).double()
    _perturb_(lift, scale=2.0, seed=4, names=("raw_u", "raw_v"))
    with torch.no_grad():
        lift.raw_s.copy_(torch.tensor([-50.0, -1e3, -1e6], dtype=torch.float64))
    s = lift.singular_values().detach()
    assert bool((s >= s_min).all()), s
    sv = torch.linalg.svdvals(lift.weight().detach())
    assert bool((sv >= s_min - 1e-12).all()), sv
    torch.testing.assert_close(sv, torch.full((3,), s_min, dtype=torch.float64), rtol=0, atol=1e-12)
    # the same in float32
    lift32 = InjectiveLift(3, 5, "learned", min_singular_value=s_min)
    with torch.no_grad():
        lift32.raw_s.fill_(-1e4)
    assert bool((lift32.singular_values() >= s_min).all())


@pytest.mark.parametrize("kind", ["learned", "identity"])
def test_injective_lift_into_a_smaller_space_is_an_error(kind):
    with pytest.raises(ValueError, match=r"data_dim >= latent_dim, got data_dim=2 < latent_dim=3"):
        InjectiveLift(3, 2, kind)
    with pytest.raises(ValueError, match="data_dim=2"):
        LIDVAE(2, 3, lift=kind, **SMALL)


def test_learned_lift_needs_a_positive_min_singular_value():
    with pytest.raises(ValueError, match="min_singular_value must be > 0"):
        InjectiveLift(2, 4, "learned", min_singular_value=0.0)


def test_linear_lift_is_an_unconstrained_linear_layer_that_can_lose_rank():
    lift = InjectiveLift(3, 6, "linear").double()
    assert isinstance(lift.linear, torch.nn.Linear)
    assert lift.linear.in_features == 3 and lift.linear.out_features == 6
    assert InjectiveLift(3, 2, "linear").weight().shape == (2, 3)  # no D >= d requirement
    a, b = _points(1, 6, seed=5)[0], _points(1, 3, seed=6)[0]
    with torch.no_grad():
        lift.linear.weight.copy_(torch.outer(a, b))  # rank one
    sv = lift.singular_values().detach()
    assert sv[0] > 0.1
    torch.testing.assert_close(sv[1:], torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)
    # two latents differing along the kernel go to one point: not injective
    kernel = torch.linalg.svd(lift.weight().detach()).Vh[-1]
    v = _points(1, 3, seed=7)
    torch.testing.assert_close(lift(v + 2.0 * kernel), lift(v), rtol=0, atol=1e-12)


def _jacobian(decoder, z):
    return torch.autograd.functional.jacobian(decoder, z)  # [D, d] at one point z [d]


@pytest.mark.parametrize("lift,s_min", [("identity", 1.0), ("learned", 0.5)])
def test_decoder_jacobian_smallest_singular_value_is_at_least_alpha_squared_times_s_min(lift, s_min):
    torch.manual_seed(0)
    alpha = 0.3
    dec = BrenierDecoder(d, 7, hidden_latent=8, hidden_data=8, strong_convexity=alpha, lift=lift,
                         min_singular_value=0.5).double()
    _perturb_(dec, scale=1.0, seed=1)  # anywhere in parameter space, not only at init
    if lift == "learned":
        with torch.no_grad():
            dec.lift.raw_s.fill_(-40.0)  # singular values at their floor s_min
    bound = alpha * alpha * s_min
    smallest = []
    for z in _points(6, d, seed=2, scale=2.0):
        J = _jacobian(dec, z)
        assert J.shape == (7, d)
        sv = torch.linalg.svdvals(J)
        assert sv[-1] >= bound * (1 - 1e-9), (z, sv)
        smallest.append(sv[-1].item())
    # each factor's bound is met: ∇²ψ ⪰ αI, and β's singular values
    assert bool((dec.lift.singular_values() >= s_min - 1e-12).all())
    # the decoder is injective quantitatively: ‖f(z1) − f(z2)‖ ≥ α² s_min ‖z1 − z2‖, also for close pairs
    z1 = _points(20, d, seed=3)
    for gap in (1.0, 1e-3):
        z2 = z1 + gap * _points(20, d, seed=4)
        with torch.no_grad():
            dist_out = (dec(z1) - dec(z2)).norm(dim=-1)
        assert bool((dist_out >= bound * (z1 - z2).norm(dim=-1) * (1 - 1e-6)).all())
        assert bool((dist_out > 0).all())


def test_anchor_recipe_decoder_can_ignore_a_latent_direction():
    """The comparison the guards are for: with the official code's unconstrained linear lift (and
    α = 0) a rank-deficient β gives a singular decoder Jacobian and two latents with one output."""
    m = LIDVAE(D, d, anchor_recipe=True, **SMALL).double()
    with torch.no_grad():
        m.decoder.lift.linear.weight.copy_(torch.outer(_points(1, D, seed=8)[0], _points(1, d, seed=9)[0]))
    J = _jacobian(m.decoder, _points(1, d, seed=10)[0])
    sv = torch.linalg.svdvals(J)
    assert sv[0] > 1e-3 and sv[-1] < 1e-10, sv


def test_two_distinct_latents_give_distinct_outputs():
    m = _lidvae(lift="learned").double()
    z = _points(2, d, seed=11)
    with torch.no_grad():
        x = m.decode(z)
        assert not torch.allclose(x[0], x[1], rtol=0, atol=1e-6)
        # and the same latent twice gives the same output
        assert torch.equal(m.decode(z[:1]), m.decode(z[:1]))


# -- 2. the potentials are α-strongly convex -----------------------------------------------------


def _hessian_eigenvalues(icnn, points):
    A, b, W, w, alpha = (t.detach() for t in icnn.weights())

    def single(p):
        return reference.icnn_potential(p[None], A, b, W, w, alpha)[0]

    return torch.linalg.eigvalsh(torch.func.vmap(torch.func.hessian(single))(points))


@pytest.mark.parametrize("lift", ["identity", "learned"])
def test_potentials_are_alpha_strongly_convex_even_after_perturbing_the_raw_parameters(lift):
    alpha = 0.4
    m = _lidvae(strong_convexity=alpha, lift=lift).double()
    for trial in range(3):
        if trial:
            # raw_W, raw_w are softplus-reparametrised: any raw values keep ψ convex
            _perturb_(m.decoder, scale=3.0, seed=trial, names=("raw_W", "raw_w", "A", "b"))
        for bmap, dim in ((m.decoder.latent_map, d), (m.decoder.data_map, D)):
            icnn = bmap.potential
            assert icnn.strong_convexity().item() == pytest.approx(alpha)
            assert bool((icnn.weights()[2] >= 0).all()) and bool((icnn.weights()[3] >= 0).all())
            eig = _hessian_eigenvalues(icnn, _points(8, dim, seed=20 + trial, scale=2.0))
            assert bool((eig >= alpha - 1e-10).all()), (trial, dim, eig.min().item())
            # the map is the gradient of that potential (fused op vs autograd of the reference)
            x = _points(4, dim, seed=30 + trial)
            _, grad = reference.icnn_map(x, *(t.detach() for t in icnn.weights()))
            torch.testing.assert_close(bmap(x).detach(), grad.detach(), rtol=1e-10, atol=1e-10)


def test_anchor_recipe_has_alpha_zero_and_a_linear_lift():
    m = LIDVAE(D, d, anchor_recipe=True, strong_convexity=0.7, lift="learned", **SMALL)
    assert m.strong_convexity == 0.0 and m.lift_kind == "linear" and m.anchor_recipe
    assert m.decoder.lift.kind == "linear"
    for bmap in (m.decoder.latent_map, m.decoder.data_map):
        assert bmap.potential.strong_convexity().item() == 0.0
    cfg = m.config()
    assert cfg["anchor_recipe"] is True and cfg["lift"] == "linear" and cfg["strong_convexity"] == 0.0
    # still convex (α = 0): the Hessian is positive semi-definite
    eig = _hessian_eigenvalues(m.decoder.latent_map.potential.double(), _points(5, d, seed=40))
    assert bool((eig >= -1e-10).all())


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), True, "0.5"])
def test_negative_strong_convexity_is_an_error(bad):
    with pytest.raises(ValueError, match="strong_convexity must be a number >= 0"):
        LIDVAE(D, d, strong_convexity=bad, **SMALL)


# -- 3. likelihoods and priors against torch.distributions ----------------------------------------


def test_bernoulli_log_likelihood_matches_torch_distributions():
    m = _lidvae().double()
    x, z = _binary(10, dtype=torch.float64), _points(10, d, seed=50)
    with torch.no_grad():
        expected = Bernoulli(logits=m.decode(z)).log_prob(x).sum(-1)
        torch.testing.assert_close(m.log_likelihood(x, z), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bernoulli_log_lik(x, m.decode(z)), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(m.mean(z), torch.sigmoid(m.decode(z)))
    # stable for large logits
    logits = torch.tensor([[-200.0, 200.0, 0.0]], dtype=torch.float64)
    xb = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(bernoulli_log_lik(xb, logits), torch.tensor([-math.log(2.0)], dtype=torch.float64))


@pytest.mark.parametrize("learn_var", [False, True])
@pytest.mark.parametrize("model", ["lidvae", "mlpvae"])
def test_gaussian_log_likelihood_matches_torch_distributions(model, learn_var):
    build = _lidvae if model == "lidvae" else _mlpvae
    m = build(likelihood="gaussian", decoder_var=0.3, learn_decoder_var=learn_var).double()
    assert isinstance(m.decoder_log_var, torch.nn.Parameter) == learn_var
    assert m.learn_decoder_var == learn_var
    torch.testing.assert_close(m.decoder_log_var.detach(), torch.full((D,), math.log(0.3), dtype=torch.float64))
    if learn_var:
        with torch.no_grad():
            m.decoder_log_var.add_(0.5 * torch.randn(D, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    x, z = _points(7, D, seed=51), _points(7, d, seed=52)
    with torch.no_grad():
        mean = m.decode(z)
        expected = Normal(mean, torch.exp(0.5 * m.decoder_log_var)).log_prob(x).sum(-1)
        torch.testing.assert_close(m.log_likelihood(x, z), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(m.mean(z), mean)


def test_gaussian_prior_matches_torch_distributions():
    m = _lidvae().double()
    z = _points(9, d, seed=53, scale=3.0)
    expected = Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)).log_prob(z).sum(-1)
    torch.testing.assert_close(m.log_prior(z), expected, rtol=1e-12, atol=1e-12)
    # extra leading dimensions
    assert m.log_prior(z.reshape(3, 3, d)).shape == (3, 3)


def test_gmm_prior_matches_torch_distributions():
    m = _lidvae(prior="gmm", components=4).double()
    with torch.no_grad():
        m.prior_log_scale.copy_(0.4 * torch.randn(4, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    z = _points(9, d, seed=54, scale=2.0)
    mix = MixtureSameFamily(Categorical(logits=torch.zeros(4, dtype=torch.float64)),
                            Independent(Normal(m.prior_loc.detach(), torch.exp(m.prior_log_scale.detach())), 1))
    torch.testing.assert_close(m.log_prior(z).detach(), mix.log_prob(z), rtol=1e-12, atol=1e-12)
    assert m.log_prior(z.reshape(3, 3, d)).shape == (3, 3)


# -- 4. the losses -------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [_lidvae, _mlpvae], ids=["lidvae", "mlpvae"])
def test_gaussian_prior_loss_is_recon_plus_beta_kl_and_kl_matches_torch(build):
    beta = 0.7
    m = build(beta=beta).double()
    x = _binary(16, dtype=torch.float64)
    torch.manual_seed(5)
    terms = m.loss({"x": x})
    assert set(terms) == {"loss", "recon", "kl"}
    torch.testing.assert_close(terms["loss"], terms["recon"] + beta * terms["kl"], rtol=1e-14, atol=0)
    with torch.no_grad():
        loc, log_scale = m.encode(x)
        q = Normal(loc, torch.exp(log_scale))
        kl = kl_divergence(q, Normal(torch.zeros_like(loc), torch.ones_like(loc))).sum(-1).mean()
        torch.manual_seed(5)
        z = loc + torch.exp(log_scale) * torch.randn_like(loc)
        recon = -Bernoulli(logits=m.decode(z)).log_prob(x).sum(-1).mean()
    torch.testing.assert_close(terms["kl"].detach(), kl, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms["recon"].detach(), recon, rtol=1e-10, atol=1e-12)


def test_gmm_loss_terms_match_a_manual_computation_and_kl_y_is_non_negative():
    K, beta = 3, 1.5
    m = _lidvae(prior="gmm", components=K, beta=beta).double()
    x = _binary(10, dtype=torch.float64)
    torch.manual_seed(6)
    terms = m.loss({"x": x})
    assert set(terms) == {"loss", "recon", "kl", "kl_y"}
    assert all(bool(torch.isfinite(v)) for v in terms.values())
    assert terms["kl_y"].item() >= 0
    torch.testing.assert_close(terms["loss"], terms["recon"] + beta * terms["kl"], rtol=1e-14, atol=0)
    with torch.no_grad():
        log_qy, loc, log_scale = m._mixture_posteriors(x)
        qy = log_qy.exp()
        torch.manual_seed(6)
        z = loc + torch.exp(log_scale) * torch.randn_like(loc)  # [B, K, d]
        log_px = Bernoulli(logits=m.decode(z.reshape(-1, d)).reshape(10, K, D)).log_prob(x[:, None]).sum(-1)
        kl_z = kl_divergence(Normal(loc, torch.exp(log_scale)),
                             Normal(m.prior_loc, torch.exp(m.prior_log_scale))).sum(-1)
        kl_y = kl_divergence(Categorical(logits=log_qy), Categorical(logits=torch.zeros(K, dtype=torch.float64)))
    torch.testing.assert_close(terms["recon"].detach(), -(qy * log_px).sum(-1).mean(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms["kl_y"].detach(), kl_y.mean(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms["kl"].detach(), ((qy * kl_z).sum(-1) + kl_y).mean(), rtol=1e-10, atol=1e-12)
    # kl_y is zero exactly when q(y|x) is uniform
    with torch.no_grad():
        last = m.encoder_y.net[-1]
        last.weight.zero_()
        last.bias.zero_()
    assert m.loss({"x": x})["kl_y"].abs().item() < 1e-14


def test_gmm_encode_returns_the_moment_matched_mixture_posterior():
    m = _lidvae(prior="gmm", components=4).double()
    x = _binary(6, dtype=torch.float64)
    with torch.no_grad():
        mean, log_scale = m.encode(x)
        log_qy, loc, comp_log_scale = m._mixture_posteriors(x)
    assert mean.shape == log_scale.shape == (6, d)
    assert log_qy.shape == (6, 4) and loc.shape == comp_log_scale.shape == (6, 4, d)
    torch.testing.assert_close(log_qy.exp().sum(-1), torch.ones(6, dtype=torch.float64))
    manual = sum(log_qy[:, k, None].exp() * loc[:, k] for k in range(4))
    torch.testing.assert_close(mean, manual, rtol=1e-12, atol=1e-12)
    mix = MixtureSameFamily(Categorical(logits=log_qy), Independent(Normal(loc, torch.exp(comp_log_scale)), 1))
    torch.testing.assert_close(mean, mix.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.exp(2 * log_scale), mix.variance, rtol=1e-10, atol=1e-12)


# -- 5, 6. training and exact resume ----------------------------------------------------------


@pytest.mark.parametrize("build", [_lidvae, _mlpvae], ids=["lidvae", "mlpvae"])
def test_loss_decreases_on_a_tiny_problem(build):
    m = build()
    x = _binary(64)
    history = fit(m, x, epochs=12, batch_size=16, lr=1e-2, schedule="none", seed=0, progress=False)
    losses = [r["loss"] for r in history["epochs"]]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    first, last = losses[0], losses[-1]
    assert last < first - 0.15 * abs(first), f"loss {first:.3f} -> {last:.3f}"


def test_resume_is_bit_identical(tmp_path):
    x = _binary(48)
    kwargs = dict(epochs=4, batch_size=16, lr=1e-2, seed=3, progress=False)
    straight = _lidvae(seed=0, lift="learned")
    h_straight = fit(straight, x, checkpoint=str(tmp_path / "a.pt"), **kwargs)

    first = _lidvae(seed=0, lift="learned")
    h_first = fit(first, x, checkpoint=str(tmp_path / "b.pt"), max_epochs_this_call=2, **kwargs)
    assert len(h_first["epochs"]) == 2
    resumed = _lidvae(seed=99, lift="learned")  # other init: everything must come from the checkpoint
    h_resumed = fit(resumed, x, checkpoint=str(tmp_path / "b.pt"), resume=True, **kwargs)

    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["epoch"] for r in h_resumed["epochs"]] == [1, 2, 3, 4]
    assert h_resumed["epochs"] == h_straight["epochs"]
    assert torch.load(tmp_path / "b.pt", weights_only=False)["epoch"] == 4


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="resume=True but no checkpoint"):
        fit(_lidvae(), _binary(8), epochs=1, checkpoint=str(tmp_path / "none.pt"), resume=True, progress=False)


# -- 7. bad input --------------------------------------------------------------------------------


def test_non_binary_data_is_rejected_with_a_clear_message():
    x = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.25, 0.0]])
    msg = ("x: a Bernoulli likelihood needs binary data, but 2 of 6 values are not 0 or 1 (e.g. 0.5 at index "
           "(0, 2)); binarise it first (e.g. x = (x > 0.5).float()) or use a Gaussian likelihood")
    with pytest.raises(ValueError, match=re.escape(msg)):
        check_bernoulli_data(x)
    with pytest.raises(ValueError, match=r"^the images: .*1 of 3 values are not 0 or 1 \(e\.g\. 2 at index 1\)"):
        check_bernoulli_data(torch.tensor([0.0, 2.0, 1.0]), "the images")
    # binary data, bool data and empty data pass
    check_bernoulli_data(_binary(5))
    check_bernoulli_data(torch.tensor([True, False]))
    check_bernoulli_data(torch.zeros(0, 3))


def test_nan_in_bernoulli_data_is_reported_as_non_binary():
    x = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
    with pytest.raises(ValueError, match=re.escape("1 of 4 values are not 0 or 1 (e.g. nan at index (0, 1))")):
        check_bernoulli_data(x)
    import numpy as np

    with pytest.raises(ValueError, match=re.escape("e.g. nan at index 2")):
        check_bernoulli_data(np.array([1.0, 0.0, np.nan]))


@pytest.mark.parametrize("build", [_lidvae, _mlpvae], ids=["lidvae", "mlpvae"])
@pytest.mark.parametrize("shape", [(4, D - 1), (4, D + 1), (D,), (2, 2, D)])
def test_x_of_the_wrong_shape_is_an_error(build, shape):
    m = build()
    with pytest.raises(ValueError, match=re.escape(f"x must have shape [B, {D}], got {list(shape)}")):
        m.loss({"x": torch.zeros(shape)})
    with pytest.raises(ValueError, match=re.escape(f"[B, {D}]")):
        m.encode(torch.zeros(shape))
    with pytest.raises(ValueError, match=re.escape(f"x must have shape [B, {D}], got ndarray")):
        m.loss({"x": torch.zeros(4, D).numpy()})


@pytest.mark.parametrize("build", [_lidvae, _mlpvae], ids=["lidvae", "mlpvae"])
@pytest.mark.parametrize("kwargs,pattern", [
    ({"likelihood": "poisson"}, r"likelihood must be one of \('bernoulli', 'gaussian'\), got 'poisson'"),
    ({"prior": "flow"}, r"prior must be one of \('gaussian', 'gmm'\), got 'flow'"),
    ({"components": 0}, r"components must be an int >= 1, got 0"),
    ({"components": 0, "prior": "gmm"}, r"components must be an int >= 1, got 0"),
    ({"encoder_layers": 1}, r"encoder_layers must be an int >= 2, got 1"),
    ({"beta": -0.5}, r"beta must be a number >= 0, got -0.5"),
])
def test_bad_constructor_arguments_are_errors_naming_the_argument(build, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        build(**kwargs)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_bad_lift_and_icnn_arguments_are_errors_naming_the_argument():
    with pytest.raises(ValueError, match=r"LIDVAE: lift must be one of \('identity', 'learned', 'linear'\), got 'bogus'"):
        LIDVAE(D, d, lift="bogus", **SMALL)
    with pytest.raises(ValueError, match=r"InjectiveLift: kind must be one of .*got 'bogus'"):
        InjectiveLift(d, D, "bogus")
    with pytest.raises(ValueError, match="icnn_layers must be an int >= 1, got 0"):
        LIDVAE(D, d, icnn_layers=0, **SMALL)
    with pytest.raises(ValueError, match="decoder_layers must be an int >= 1, got 0"):
        MLPVAE(D, d, decoder_layers=0)
    with pytest.raises(ValueError, match="latent_dim must be an int >= 1, got 0"):
        MLPVAE(D, 0, decoder_hidden=8, encoder_hidden=8)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("build,kwargs,name", [
    (lambda: LIDVAE(D, 0, **SMALL), {}, "latent_dim"),
    (lambda: LIDVAE(2.5, 1, **SMALL), {}, "data_dim"),
    (_lidvae, {"encoder_hidden": 0}, "encoder_hidden"),
    (_mlpvae, {"decoder_hidden": 0}, "decoder_hidden"),
    (_mlpvae, {"likelihood": "gaussian", "decoder_var": 0.0}, "decoder_var"),
], ids=["lidvae-latent_dim", "lidvae-data_dim", "encoder_hidden", "decoder_hidden", "decoder_var"])
def test_bad_sizes_are_value_errors_naming_the_argument(build, kwargs, name):
    """Sizes and the variance are checked before any submodule is built, so the error names them."""
    with pytest.raises(ValueError) as info:
        build(**kwargs)
    assert name in str(info.value), str(info.value)


# -- 8. sampling and forward ---------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["gaussian", "gmm"])
@pytest.mark.parametrize("build", [_lidvae, _mlpvae], ids=["lidvae", "mlpvae"])
def test_sample_returns_bernoulli_means_and_latents(build, prior):
    m = build(prior=prior, components=3)
    torch.manual_seed(7)
    mean, z = m.sample(5)
    assert mean.shape == (5, D) and z.shape == (5, d)
    assert mean.dtype == z.dtype == torch.float32
    assert bool(((mean >= 0) & (mean <= 1)).all())
    torch.testing.assert_close(mean, torch.sigmoid(m.decode(z)).detach())
    assert not mean.requires_grad
    torch.manual_seed(7)
    mean2, z2 = m.sample(5)
    assert torch.equal(z, z2) and torch.equal(mean, mean2)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        m.sample(0)
    md = m.double()
    assert md.sample(2)[1].dtype == torch.float64


def test_gaussian_likelihood_sample_returns_the_decoder_mean():
    m = _lidvae(likelihood="gaussian")
    torch.manual_seed(8)
    mean, z = m.sample(4)
    torch.testing.assert_close(mean, m.decode(z).detach())


@pytest.mark.parametrize("prior", ["gaussian", "gmm"])
def test_forward_equals_loss_under_the_same_seed(prior):
    m = _lidvae(prior=prior, components=3).double()
    batch = {"x": _binary(8, dtype=torch.float64)}
    torch.manual_seed(9)
    a = m(batch)
    torch.manual_seed(9)
    b = m.loss(batch)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a different seed draws different noise
    torch.manual_seed(10)
    assert not torch.equal(m(batch)["recon"], a["recon"])


def test_config_describes_the_model():
    m = _lidvae(lift="learned", min_singular_value=0.2, strong_convexity=0.3)
    cfg = m.config()
    assert cfg["decoder"] == "brenier" and cfg["lift"] == "learned" and cfg["min_singular_value"] == 0.2
    assert cfg["strong_convexity"] == 0.3 and cfg["data_dim"] == D and cfg["latent_dim"] == d
    assert (cfg["icnn_hidden_latent"], cfg["icnn_hidden_data"], cfg["icnn_layers"]) == (16, 16, 2)
    b = _mlpvae()
    assert b.config()["decoder"] == "mlp" and b.config()["decoder_hidden"] == 32
    assert isinstance(m, LatentVAE) and isinstance(b, LatentVAE)


def test_zero_strong_convexity_is_allowed_for_ablations():
    m = LIDVAE(D, d, strong_convexity=0.0, **SMALL)
    assert float(m.decoder.latent_map.potential.alpha) == 0.0 and m.lift_kind == "learned"
