"""ivae_ext.nn.ICNN and BrenierMap: the module contract and the properties any valid weights give
(convexity, strong monotonicity, invertibility). float64 throughout."""

from __future__ import annotations

import pytest
import torch

from ivae_ext import reference
from ivae_ext.nn import BrenierMap, ICNN

F64 = torch.float64
# (dim, hidden, layers, alpha): includes K = 1, d = 1, H = 1.
SHAPES = [(3, 8, 3, 0.5), (1, 4, 2, 0.1), (2, 1, 1, 1.0), (5, 16, 1, 0.2), (4, 6, 4, 0.05)]


def make_icnn(dim, hidden, layers, alpha, seed=0, learn=False, raw_scale=None):
    """An ICNN with seeded weights; raw_scale replaces raw_W, raw_w by N(0, raw_scale²) draws."""
    torch.manual_seed(seed)
    net = ICNN(dim, hidden, layers, strong_convexity=alpha, learn_strong_convexity=learn, dtype=F64)
    if raw_scale is not None:
        with torch.no_grad():
            net.raw_W.normal_(0.0, raw_scale)
            net.raw_w.normal_(0.0, raw_scale)
    return net


def make_map(dim, hidden, layers, alpha, seed=0, raw_scale=None):
    brenier = BrenierMap(dim, hidden, layers, strong_convexity=alpha, dtype=F64)
    brenier.potential = make_icnn(dim, hidden, layers, alpha, seed, raw_scale=raw_scale)
    return brenier


def points(shape, seed=1, scale=2.0):
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("dim,hidden,layers,alpha", SHAPES)
def test_potential_equals_reference_with_module_weights(dim, hidden, layers, alpha):
    net = make_icnn(dim, hidden, layers, alpha, raw_scale=1.0)
    x = points((13, dim))
    expected = reference.icnn_potential(x, *net.weights())
    torch.testing.assert_close(net(x), expected, rtol=1e-10, atol=1e-10, msg="ICNN(x) differs from reference.icnn_potential")


@pytest.mark.parametrize("dim,hidden,layers,alpha", SHAPES)
def test_map_equals_reference_gradient_and_potential(dim, hidden, layers, alpha):
    brenier = make_map(dim, hidden, layers, alpha, raw_scale=1.0)
    x = points((13, dim))
    grad, psi = brenier(x, return_potential=True)
    ref_psi, ref_grad = reference.icnn_map(x, *brenier.potential.weights())
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10, msg="BrenierMap(x) differs from reference ∇ψ")
    torch.testing.assert_close(psi, ref_psi, rtol=1e-10, atol=1e-10, msg="BrenierMap ψ differs from reference")
    torch.testing.assert_close(brenier(x), grad, rtol=0, atol=0, msg="return_potential changed the map")


def test_hidden_and_output_weights_nonnegative_whatever_the_raw_values():
    net = make_icnn(3, 8, 3, 0.0, raw_scale=30.0)
    with torch.no_grad():
        net.raw_W[0, 0, 0] = -1e4  # softplus underflows to 0 here: still >= 0
    _, _, W, w, alpha = net.weights()
    assert bool((W >= 0).all()), f"W has negative entries: min {W.min().item()}"
    assert bool((w >= 0).all()), f"w has negative entries: min {w.min().item()}"
    assert alpha.item() == 0.0, f"fixed strong_convexity 0 returned alpha {alpha.item()}"


def test_learned_strong_convexity_starts_at_value_and_gets_a_gradient():
    net = make_icnn(2, 4, 2, 0.3, learn=True)
    alpha = net.weights()[4]
    assert abs(alpha.item() - 0.3) < 1e-12, f"learned alpha starts at {alpha.item()}, expected 0.3"
    net(points((5, 2))).sum().backward()
    assert net.raw_alpha.grad is not None and net.raw_alpha.grad.item() > 0, "raw_alpha got no (positive) gradient"
    assert "alpha" not in dict(net.named_buffers()), "learned alpha must not also be a buffer"


def test_initial_scale_is_order_one_at_any_width():
    x = points((64, 4), scale=1.0)
    for hidden in (4, 256):
        grad, psi = make_map(4, hidden, 4, 0.0)(x, return_potential=True)
        assert 0.05 < psi.abs().mean().item() < 20, f"H={hidden}: |ψ| mean {psi.abs().mean().item()} not O(1)"
        assert 1e-3 < grad.norm(dim=-1).mean().item() < 20, f"H={hidden}: ‖∇ψ‖ mean {grad.norm(dim=-1).mean().item()} not O(1)"


@pytest.mark.parametrize("dim,hidden,layers,alpha", SHAPES)
def test_midpoint_convexity(dim, hidden, layers, alpha):
    net = make_icnn(dim, hidden, layers, 0.0, raw_scale=2.0)  # α = 0: convexity from W, w >= 0 alone
    x, y = points((200, dim), seed=1), points((200, dim), seed=2)
    lhs, rhs = net(0.5 * (x + y)), 0.5 * (net(x) + net(y))
    gap = (lhs - rhs).max().item()
    assert gap <= 1e-12 * (1 + rhs.abs().max().item()), f"midpoint inequality violated by {gap}"


@pytest.mark.parametrize("dim,hidden,layers,alpha", SHAPES)
def test_strong_monotonicity(dim, hidden, layers, alpha):
    brenier = make_map(dim, hidden, layers, alpha, raw_scale=2.0)
    x, y = points((200, dim), seed=3), points((200, dim), seed=4)
    inner = ((brenier(x) - brenier(y)) * (x - y)).sum(-1)
    bound = alpha * ((x - y) ** 2).sum(-1)
    worst = (bound - inner).max().item()
    assert worst <= 1e-10, f"<∇ψ(x) − ∇ψ(y), x − y> falls below α‖x − y‖² by {worst}"


@pytest.mark.parametrize("dim,hidden,layers,alpha", SHAPES)
def test_inverse_round_trip(dim, hidden, layers, alpha):
    brenier = make_map(dim, hidden, layers, alpha, raw_scale=1.0)
    x = points((64, dim))
    x_back = brenier.inverse(brenier(x).detach(), tol=1e-10)
    err = (x_back - x).norm(dim=-1).max().item()
    assert err <= 1e-10 / alpha * 10, f"‖inverse(forward(x)) − x‖ = {err}"
    y = points((64, dim), seed=5)
    residual = (brenier(brenier.inverse(y, tol=1e-10)) - y).norm(dim=-1).max().item()
    assert residual <= 1e-10, f"‖forward(inverse(y)) − y‖ = {residual}"


def test_inverse_accepts_a_starting_point():
    brenier = make_map(3, 8, 2, 0.5)
    x = points((10, 3))
    x_back = brenier.inverse(brenier(x).detach(), tol=1e-10, x0=x + 0.01)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-9, msg="inverse from x0 near the answer")


def test_higher_batch_ranks():
    brenier = make_map(3, 8, 2, 0.5, raw_scale=1.0)
    x = points((2, 5, 3))
    grad, psi = brenier(x, return_potential=True)
    assert grad.shape == (2, 5, 3) and psi.shape == (2, 5), f"got grad {tuple(grad.shape)}, psi {tuple(psi.shape)}"
    flat_grad, flat_psi = brenier(x.reshape(10, 3), return_potential=True)
    torch.testing.assert_close(grad.reshape(10, 3), flat_grad, rtol=0, atol=0, msg="batched map differs from flat")
    torch.testing.assert_close(brenier.potential(x).reshape(10), flat_psi, rtol=0, atol=0, msg="batched ψ differs from flat")
    assert brenier.potential(x[0, 0]).shape == (), "a single point [d] must give a 0-d ψ"
    x_back = brenier.inverse(grad.detach(), tol=1e-10)
    assert x_back.shape == x.shape, f"inverse shape {tuple(x_back.shape)} != {tuple(x.shape)}"
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-9, msg="batched inverse round trip")


def test_wrong_last_dimension_is_a_clear_error():
    brenier = make_map(3, 4, 2, 0.5)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 3\].*got \[4, 2\]"):
        brenier.potential(torch.zeros(4, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 3\]"):
        brenier(torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"y must have shape \[\.\.\., 3\]"):
        brenier.inverse(torch.zeros(4, 2, dtype=F64))


def test_bad_constructor_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="layers must be an int >= 1, got 0"):
        ICNN(2, 4, 0)
    with pytest.raises(ValueError, match="strong_convexity must be a float >= 0, got -1"):
        ICNN(2, 4, 1, strong_convexity=-1.0)
    with pytest.raises(ValueError, match="learn_strong_convexity=True needs strong_convexity > 0"):
        ICNN(2, 4, 1, strong_convexity=0.0, learn_strong_convexity=True)


def test_inverse_without_convergence_names_the_residual():
    brenier = make_map(3, 8, 3, 0.1, raw_scale=1.0)
    y = points((8, 3), seed=6, scale=5.0)
    with pytest.raises(RuntimeError, match=r"did not converge in max_iter=1 .*largest residual ‖∇ψ\(x\) − y‖ = [0-9.e+-]+ > tol = 1e-14"):
        brenier.inverse(y, tol=1e-14, max_iter=1)


def test_inverse_needs_strong_convexity():
    brenier = make_map(3, 8, 2, 0.0)
    with pytest.raises(ValueError, match="needs strong_convexity α > 0.*got α = 0"):
        brenier.inverse(points((4, 3)))


def test_training_step_reduces_a_loss_through_the_map():
    brenier = BrenierMap(2, 8, 3, strong_convexity=0.5, learn_strong_convexity=True, dtype=F64)
    x = points((32, 2), scale=1.0)
    target = 2.0 * x.flip(-1)
    opt = torch.optim.SGD(brenier.parameters(), lr=0.05)
    losses = []
    for _ in range(2):
        opt.zero_grad()
        loss = ((brenier(x) - target) ** 2).mean()
        loss.backward()
        losses.append(loss.item())
        opt.step()
    for name, p in brenier.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), f"no gradient reached {name}"
    assert losses[1] < losses[0], f"one SGD step did not reduce the loss: {losses}"
