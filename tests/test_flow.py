"""ivae_ext.models.ConvexPotentialFlow: a normalized density (integrates to 1), the reference
computation, invertibility, the conditional base, errors, training, and the 2-D example."""

from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest
import torch

from ivae_ext import fit, reference
from ivae_ext.models import ConvexPotentialFlow

F64 = torch.float64
EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "flow_2d.py")


def make_flow(dim, maps=2, alpha=0.5, conditional_dim=None, seed=0, hidden=8, layers=2):
    torch.manual_seed(seed)
    return ConvexPotentialFlow(dim, hidden=hidden, layers=layers, maps=maps, strong_convexity=alpha,
                               conditional_dim=conditional_dim, dtype=F64)


def points(shape, seed=1, scale=1.5):
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def mass_on_grid(flow, dim, half_width=30.0, n=None):
    """∫ exp log p by the trapezoid rule on [-half_width, half_width]^dim. With α = 0.5 and two
    maps the tails are Gaussian with scale ≈ 1/α² = 4, so ±30 holds all but ~1e-12 of the mass."""
    n = n or (6001 if dim == 1 else 301)
    g = torch.linspace(-half_width, half_width, n, dtype=F64)
    with torch.no_grad():
        if dim == 1:
            return torch.trapezoid(flow.log_prob(g[:, None]).exp(), g).item()
        gx, gy = torch.meshgrid(g, g, indexing="ij")
        density = flow.log_prob(torch.stack([gx, gy], -1)).exp()
    return torch.trapezoid(torch.trapezoid(density, g, dim=1), g).item()


def two_moons(n, seed=0):
    from sklearn.datasets import make_moons

    x = torch.tensor(make_moons(n, noise=0.1, random_state=seed)[0], dtype=F64)
    return (x - x.mean(0)) / x.std(0)


@pytest.mark.parametrize("dim", [1, 2])
def test_untrained_log_prob_integrates_to_one(dim):
    mass = mass_on_grid(make_flow(dim), dim)
    assert mass == pytest.approx(1.0, abs=1e-4), f"∫ p = {mass} for an untrained {dim}-D flow"


def test_briefly_trained_log_prob_integrates_to_one():
    flow = make_flow(2, hidden=16)
    fit(flow, two_moons(512), epochs=4, batch_size=64, lr=1e-2, schedule="none", progress=False)
    mass = mass_on_grid(flow, 2)
    assert mass == pytest.approx(1.0, abs=1e-3), f"∫ p = {mass} after training"


def test_conditional_log_prob_integrates_to_one_for_each_u():
    flow = make_flow(1, conditional_dim=3)
    g = torch.linspace(-30.0, 30.0, 6001, dtype=F64)
    for u in points((2, 3), seed=4):
        with torch.no_grad():
            mass = torch.trapezoid(flow.log_prob(g[:, None], u.expand(len(g), 3)).exp(), g).item()
        assert mass == pytest.approx(1.0, abs=1e-4), f"∫ p(x | u) = {mass} for u = {u.tolist()}"


def reference_log_prob(flow, x):
    """log N(y; 0, I) + Σ log det, each map by the plain-torch oracle (autograd ∇ψ, vmap(hessian))."""
    y, total = x, torch.zeros(len(x), dtype=x.dtype)
    for brenier in flow.maps:
        weights = brenier.potential.weights()
        total = total + reference.brenier_logdet(y, *weights)
        y = reference.icnn_map(y, *weights)[1]
    return -0.5 * (y * y).sum(-1) - 0.5 * y.shape[-1] * math.log(2 * math.pi) + total


@pytest.mark.parametrize("dim,maps,layers", [(1, 1, 1), (2, 2, 2), (3, 3, 3)])
def test_log_prob_and_its_gradients_match_the_reference(dim, maps, layers):
    flow = make_flow(dim, maps=maps, layers=layers)
    x = points((7, dim))
    params = list(flow.parameters())
    fused = flow.log_prob(x)
    expected = reference_log_prob(flow, x)
    torch.testing.assert_close(fused, expected, rtol=1e-10, atol=1e-10, msg="log_prob differs from the reference")
    weights = points(fused.shape, seed=9)
    # K = 1 has an empty W that the reference's graph never uses: its gradient is zeros.
    got = torch.autograd.grad((fused * weights).sum(), params, allow_unused=True, materialize_grads=True)
    want = torch.autograd.grad((expected * weights).sum(), params, allow_unused=True, materialize_grads=True)
    for g, w, p in zip(got, want, params):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10, msg=f"gradient of a {list(p.shape)} parameter differs")


def test_forward_keeps_batch_shape_and_inverse_undoes_it():
    flow = make_flow(2, maps=3)
    x = points((3, 4, 2))
    y, logdet = flow(x)
    assert y.shape == (3, 4, 2) and logdet.shape == (3, 4)
    assert flow.log_prob(x).shape == (3, 4)
    torch.testing.assert_close(flow.inverse(y.detach()), x, rtol=0, atol=1e-8, msg="inverse(forward(x)) != x")


def test_sample_shapes_and_draws_map_back_to_the_base():
    flow = make_flow(2)
    torch.manual_seed(3)
    x = flow.sample(64)
    assert x.shape == (64, 2) and x.dtype == F64
    # The same seed draws the same base points; pushing the samples forward must give them back.
    torch.manual_seed(3)
    torch.testing.assert_close(flow(x)[0], torch.randn(64, 2, dtype=F64), rtol=0, atol=1e-8)


def test_conditional_sample_takes_one_u_or_one_per_draw():
    flow = make_flow(2, conditional_dim=3)
    u = points((3,), seed=5)
    assert flow.sample(10, u).shape == (10, 2)
    assert flow.sample(10, u.expand(10, 3)).shape == (10, 2)


def test_conditional_log_prob_depends_on_u():
    flow = make_flow(2, conditional_dim=3)
    x = points((5, 2))
    u1, u2 = points((5, 3), seed=2), points((5, 3), seed=3)
    assert not torch.allclose(flow.log_prob(x, u1), flow.log_prob(x, u2)), "p(x | u) ignores u"
    loc, log_scale = flow.base_params(u1, 5)
    y, logdet = flow(x)
    expected = torch.distributions.Normal(loc, log_scale.exp()).log_prob(y).sum(-1) + logdet
    torch.testing.assert_close(flow.log_prob(x, u1), expected, msg="conditional base log-density is not N(y; μ(u), σ(u))")


def test_conditional_flow_requires_u():
    flow = make_flow(2, conditional_dim=3)
    with pytest.raises(ValueError, match=r"log_prob: u is required.*conditional_dim=3"):
        flow.log_prob(points((4, 2)))
    with pytest.raises(ValueError, match=r"loss: u is required"):
        flow.loss({"x": points((4, 2))})
    with pytest.raises(ValueError, match=r"sample: u is required"):
        flow.sample(4)


def test_unconditional_flow_rejects_u():
    with pytest.raises(ValueError, match=r"log_prob: u was given but this flow is unconditional"):
        make_flow(2).log_prob(points((4, 2)), points((4, 3)))


@pytest.mark.parametrize("u_shape", [(4, 2), (5, 3), (3,)])
def test_wrong_u_shape_is_named(u_shape):
    with pytest.raises(ValueError, match=r"log_prob: u must have shape"):
        make_flow(2, conditional_dim=3).log_prob(points((4, 2)), points(u_shape))


@pytest.mark.parametrize("x_shape", [(4, 3), (5,), ()])
def test_wrong_x_shape_is_named(x_shape):
    with pytest.raises(ValueError, match=r"ConvexPotentialFlow.log_prob: x must have shape \[\.\.\., 2\]"):
        make_flow(2).log_prob(points(x_shape))


def test_wrong_y_shape_in_inverse_is_named():
    with pytest.raises(ValueError, match=r"inverse: y must have shape \[\.\.\., 2\]"):
        make_flow(2).inverse(points((4, 1)))


@pytest.mark.parametrize("kwargs,match", [
    ({"strong_convexity": 0.0}, r"strong_convexity must be a float > 0"),
    ({"maps": 0}, r"maps must be an int >= 1"),
    ({"conditional_dim": 0}, r"conditional_dim must be an int >= 1"),
    ({"dim": 2.0}, r"dim must be an int >= 1"),
])
def test_bad_constructor_arguments_are_named(kwargs, match):
    args = {"dim": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        ConvexPotentialFlow(**args)


def test_loss_terms_add_up():
    flow = make_flow(2)
    terms = flow.loss({"x": points((16, 2))})
    assert set(terms) == {"loss", "nll", "log_base", "logdet"}
    torch.testing.assert_close(terms["loss"], -(terms["log_base"] + terms["logdet"]))
    torch.testing.assert_close(terms["loss"], -flow.log_prob(points((16, 2))).mean())


def test_fit_decreases_the_loss_conditional_and_not():
    x = two_moons(256)
    u = torch.nn.functional.one_hot((x[:, 1] > 0).long(), 2).to(F64)  # which moon-half a point is in
    for flow, aux in ((make_flow(2, hidden=16), None), (make_flow(2, hidden=16, conditional_dim=2), u)):
        history = fit(flow, x, aux, epochs=6, batch_size=64, lr=1e-2, schedule="none", progress=False)
        losses = [record["loss"] for record in history["epochs"]]
        assert losses[-1] < losses[0] - 0.1, f"loss did not decrease: {losses}"


def test_example_runs_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("flow_2d_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    metrics = example.main(["--out", str(tmp_path), "--n-train", "256", "--n-test", "128", "--epochs", "2",
                            "--hidden", "8", "--grid", "24", "--samples", "32", "--no-progress"])
    assert sorted(os.listdir(tmp_path)) == ["flow_2d.png", "metrics.json"], "missing output or a leftover temp file"
    with open(tmp_path / "metrics.json") as f:
        saved = json.load(f)
    assert math.isfinite(saved["test_nll"]) and saved["test_nll"] == pytest.approx(metrics["test_nll"])
    with open(tmp_path / "flow_2d.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_stochastic_training_gradient_estimates_the_exact_one():
    """logdet="stochastic": in training mode the loss goes through the surrogate (no "nll" term);
    with many probes its gradient is close to the exact NLL's; in eval mode the loss is exact."""
    torch.manual_seed(0)
    flow = ConvexPotentialFlow(3, hidden=8, layers=2, maps=2, strong_convexity=0.5, logdet="stochastic", probes=600,
                               cg_tol=1e-10, dtype=F64)
    x = points((16, 3), seed=2)
    terms = flow.loss({"x": x})
    assert set(terms) == {"loss", "log_base", "logdet_surrogate", "cg_iterations"}
    assert 1 <= float(terms["cg_iterations"]) <= 3
    params = list(flow.parameters())
    estimate = torch.cat([g.flatten() for g in torch.autograd.grad(terms["loss"], params)])
    flow.trains_with_surrogate = False
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(flow.loss({"x": x})["loss"], params)])
    assert float((estimate - exact).norm() / exact.norm()) < 0.05
    flow.trains_with_surrogate = True
    flow.eval()
    with torch.no_grad():
        evaluated = flow.loss({"x": x})
    want = -reference_log_prob(flow, x).mean().detach()
    assert float(evaluated["nll"]) == pytest.approx(float(want), rel=1e-10)


def test_auto_follows_the_cost_model():
    from ivae_ext.ops.logdet_surrogate import stochastic_is_cheaper

    small = ConvexPotentialFlow(2, hidden=8, layers=2, logdet="auto")
    wide = ConvexPotentialFlow(64, hidden=128, layers=4, logdet="auto")
    assert not small.uses_surrogate() and wide.uses_surrogate()
    assert stochastic_is_cheaper(64, 128, 4, 10) and not stochastic_is_cheaper(2, 8, 2, 2)
    wide.eval()
    assert not wide.uses_surrogate()  # evaluation is always exact
    wide.train()
    with torch.no_grad():
        assert not wide.uses_surrogate()


def test_cost_model_counts_the_low_rank_exact_form():
    from ivae_ext.ops.logdet_surrogate import EXACT_EFFICIENCY, exact_step_cost

    # 2KH <= d: brenier_logdet works with the KH x KH capacitance matrix, not the d x d Hessian
    d, H, K = 128, 8, 2
    r = K * H
    assert exact_step_cost(d, H, K) == 3 * ((K - 1) * H**2 * d + d * r**2 + r**3 / 3) / EXACT_EFFICIENCY
    d, H, K = 24, 8, 2  # 2KH > d: the d x d form
    assert exact_step_cost(d, H, K) == 3 * ((K - 1) * H**2 * d + K * H * d**2 + d**3 / 3) / EXACT_EFFICIENCY


def test_stochastic_flow_fits_two_moons():
    x = two_moons(512)
    torch.manual_seed(0)
    flow = ConvexPotentialFlow(2, hidden=16, layers=2, maps=2, strong_convexity=0.5, logdet="stochastic", dtype=F64)
    before = float(flow.eval().loss({"x": x})["nll"])
    fit(flow, x, epochs=6, batch_size=64, lr=1e-2, schedule="none", progress=False)
    after = float(flow.eval().loss({"x": x})["nll"])
    assert after < before - 0.1, f"exact NLL {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("kwargs, message", [({"logdet": "cholesky"}, "logdet must be one of"),
                                             ({"probes": 0}, "probes must be an int >= 1"),
                                             ({"cg_tol": 0.0}, "cg_tol must be a float > 0")])
def test_bad_logdet_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvexPotentialFlow(2, **kwargs)
