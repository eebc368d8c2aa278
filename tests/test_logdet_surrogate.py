"""ivae_ext.ops.stochastic_logdet_surrogate / brenier_map_surrogate: the CP-Flow estimator of the
gradient of log det ∇²ψ with analytic Hessian-vector products and conjugate gradient.

The strongest check: averaged over all 2^d sign vectors (E[v vᵀ] = I exactly), the surrogate's
gradient IS the gradient of log det — compared with the exact op in float64."""

from __future__ import annotations

import itertools

import pytest
import torch

from ivae_ext import reference
from ivae_ext.ops import brenier_logdet, brenier_map_surrogate, icnn_map, stochastic_logdet_surrogate, use_reference_ops
from ivae_ext.ops import logdet_surrogate as surrogate_module
from ivae_ext.ops.icnn_map import HAS_FUSED_ICNN

from helpers import DEVICES, icnn_inputs

pytestmark = pytest.mark.skipif(not HAS_FUSED_ICNN, reason="compiled op required")

NAMES = ("x", "A", "b", "W", "w", "alpha")
# (B, d, H, K): K = 1, H = 1, d = 1, a padded column (d = 9), tile edges (H = 40, 70)
SHAPES = [(5, 3, 6, 3), (7, 2, 5, 1), (4, 1, 3, 2), (6, 4, 1, 2), (9, 5, 40, 4), (5, 9, 70, 2)]
PATHS = ["tiles", "aten"]  # the CPU's tiled solve and the ATen sequence every other device runs


@pytest.fixture(params=PATHS)
def cpu_path(request, monkeypatch):
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", request.param)
    return request.param


def all_signs(batch, dim, dtype=torch.float64, device="cpu"):
    """[2^d, B, d]: every sign vector, the same for each sample."""
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=dim)), dtype=dtype, device=device)
    return signs[:, None, :].expand(len(signs), batch, dim).contiguous()


def grads_of(outputs, inputs, weights):
    loss = sum((o * w).sum() for o, w in zip(outputs, weights))
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


def weights_for(*shapes, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-d{}-H{}-K{}".format(*s))
def test_average_over_all_signs_is_the_exact_logdet_gradient(shape, device, cpu_path):
    B, d = shape[:2]
    inputs = icnn_inputs(*shape, device=device)
    probes = all_signs(B, d, device=device)
    _, _, surrogate, iterations, _, _ = surrogate_module._brenier_surrogate(*inputs, probes, 1e-12, 10 * d)
    assert bool((iterations >= 1).all()) and bool((iterations <= d + 2).all())  # CG: ≈ d steps in exact arithmetic
    (g,) = weights_for((B,))
    got = grads_of([surrogate], inputs, [g.to(device)])
    want = grads_of([brenier_logdet(*inputs)], inputs, [g.to(device)])
    for name, a, b in zip(NAMES, got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-d{}-H{}-K{}".format(*s))
def test_outputs_and_gradients_match_the_autograd_reference(shape, cpu_path):
    """Same probes: ψ, ∇ψ, the surrogate and every gradient through all three against
    double/triple backpropagation (reference.stochastic_logdet_surrogate, CP-Flow's schedule)."""
    B, d = shape[:2]
    inputs = icnn_inputs(*shape)
    probes = torch.randint(0, 2, (3, B, d), generator=torch.Generator().manual_seed(5)).double() * 2 - 1
    psi, grad, surrogate, _, _, _ = surrogate_module._brenier_surrogate(*inputs, probes, 1e-13, 10 * d)
    psi_ref, grad_ref = reference.icnn_map(*inputs)
    surrogate_ref, _ = reference.stochastic_logdet_surrogate(*inputs, probes, 1e-13, 10 * d)
    for name, a, b in (("psi", psi, psi_ref), ("grad", grad, grad_ref), ("surrogate", surrogate, surrogate_ref)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")
    weights = weights_for((B,), (B, d), (B,))
    got = grads_of([psi, grad, surrogate], inputs, weights)
    want = grads_of([psi_ref, grad_ref, surrogate_ref], inputs, weights)
    for name, a, b in zip(NAMES, got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_public_function_many_probes_estimates_the_exact_gradient():
    """Random Rademacher probes through the public API: the average gradient over many probes is
    within 5 standard errors of the exact one (per entry), and the surrogate's value is ≈ d."""
    B, d = 3, 4
    inputs = icnn_inputs(B, d, 8, 2)
    gen = torch.Generator().manual_seed(0)
    per_probe = []
    for _ in range(8):
        s = stochastic_logdet_surrogate(*inputs, probes=250, tol=1e-12, generator=gen)
        per_probe.append(torch.cat([g.flatten() for g in torch.autograd.grad(s.sum(), inputs)]))
        torch.testing.assert_close(s, torch.full_like(s, float(d)), rtol=1e-8, atol=1e-8)
    batches = torch.stack(per_probe)
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(brenier_logdet(*inputs).sum(), inputs)])
    mean, sem = batches.mean(0), batches.std(0) / len(per_probe) ** 0.5
    assert bool(((mean - exact).abs() <= 5 * sem + 1e-9).all())
    assert float((mean - exact).norm() / exact.norm()) < 0.05


def test_combined_outputs_are_icnn_map():
    inputs = icnn_inputs(6, 3, 5, 2)
    psi, grad, _ = brenier_map_surrogate(*inputs, generator=torch.Generator().manual_seed(0))
    want_psi, want_grad = icnn_map(*inputs)
    torch.testing.assert_close(psi, want_psi, rtol=0, atol=0)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conjugate_gradient_meets_tol_and_paths_agree(dtype, monkeypatch):
    inputs = [t.detach() for t in icnn_inputs(64, 6, 16, 3, dtype=dtype, alpha=0.05)]
    probes = torch.randint(0, 2, (2, 64, 6), generator=torch.Generator().manual_seed(1)).to(dtype) * 2 - 1
    hessian = reference.icnn_hessian(*[t.double() for t in inputs])
    results = {}
    for path in PATHS:
        monkeypatch.setenv("IVAE_ICNN_CPU_PATH", path)
        _, _, surrogate, iterations, _, u = surrogate_module._brenier_surrogate(*inputs, probes, 1e-4, 50)
        results[path] = (surrogate, iterations, u)
        residual = probes.double() - torch.einsum("bij,pbj->pbi", hessian, u.double())
        assert float(residual.abs().max()) < 1e-4 + (1e-4 if dtype == torch.float32 else 1e-12)
        assert int(iterations.min()) >= 1
    torch.testing.assert_close(results["tiles"][2], results["aten"][2], rtol=1e-4 if dtype == torch.float32 else 1e-10,
                               atol=1e-5 if dtype == torch.float32 else 1e-12)
    assert bool((results["tiles"][1] == results["aten"][1]).all())


@pytest.mark.parametrize("path", PATHS)
def test_iteration_cap_is_one_steepest_descent_step(path, monkeypatch):
    """max_iter = 1 from u = 0 gives u = (vᵀv / vᵀHv) v for every sample, and reports 1."""
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", path)
    inputs = [t.detach() for t in icnn_inputs(8, 5, 7, 2)]
    probes = torch.randint(0, 2, (1, 8, 5), generator=torch.Generator().manual_seed(2)).double() * 2 - 1
    _, _, _, iterations, _, u = surrogate_module._brenier_surrogate(*inputs, probes, 1e-12, 1)
    assert iterations.tolist() == [1] * 8
    v = probes[0]
    hv = torch.einsum("bij,bj->bi", reference.icnn_hessian(*inputs), v)
    want = ((v * v).sum(-1) / (v * hv).sum(-1)).unsqueeze(1) * v
    torch.testing.assert_close(u[0], want, rtol=1e-12, atol=1e-12)
    _, counts = stochastic_logdet_surrogate(*inputs, max_iter=2, return_info=True)
    assert bool((counts <= 2).all())


def test_deterministic_given_the_generator():
    inputs = icnn_inputs(10, 4, 6, 2)
    first = stochastic_logdet_surrogate(*inputs, generator=torch.Generator().manual_seed(7))
    g1 = torch.autograd.grad(first.sum(), inputs)
    second = stochastic_logdet_surrogate(*inputs, generator=torch.Generator().manual_seed(7))
    g2 = torch.autograd.grad(second.sum(), inputs)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    other = stochastic_logdet_surrogate(*inputs, generator=torch.Generator().manual_seed(8))
    g3 = torch.autograd.grad(other.sum(), inputs)
    assert not torch.equal(g1[1], g3[1])


def indefinite_inputs():
    """α = 0 and negative output weights: the Hessian is negative definite somewhere."""
    x, A, b, W, w, _ = [t.detach() for t in icnn_inputs(6, 3, 5, 2)]
    return x, A, b, W, -w, torch.tensor(0.0, dtype=torch.float64)


@pytest.mark.parametrize("path", PATHS)
def test_not_positive_definite_is_an_error_or_flagged_nan(path, monkeypatch):
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", path)
    inputs = indefinite_inputs()
    with pytest.raises(ValueError, match=r"stochastic_logdet_surrogate: the Hessian .* is not positive definite "
                                         r"for 6 of 6 samples"):
        stochastic_logdet_surrogate(*inputs)
    value, iterations = stochastic_logdet_surrogate(*inputs, check=False, return_info=True)
    assert iterations.tolist() == [-1] * 6 and bool(torch.isnan(value).all())
    with use_reference_ops():
        value, iterations = stochastic_logdet_surrogate(*inputs, check=False, return_info=True)
    assert iterations.tolist() == [-1] * 6 and bool(torch.isnan(value).all())


def test_nan_input_is_flagged():
    x, A, b, W, w, alpha = [t.detach() for t in icnn_inputs(4, 2, 3, 2)]
    x[2, 0] = float("nan")
    for check in (True, False):  # NaN propagates (brenier_logdet's policy too): status -2, not an error
        value, iterations = stochastic_logdet_surrogate(x, A, b, W, w, alpha, check=check, return_info=True)
        assert iterations[2] == -2 and bool(torch.isnan(value[2])) and bool(torch.isfinite(value[[0, 1, 3]]).all())
        assert bool((iterations[[0, 1, 3]] > 0).all())
    with use_reference_ops():
        value, iterations = stochastic_logdet_surrogate(x, A, b, W, w, alpha, return_info=True)
    assert iterations[2] == -2 and bool(torch.isnan(value[2])) and bool(torch.isfinite(value[[0, 1, 3]]).all())


def test_empty_batch_and_zero_dimensions():
    inputs = icnn_inputs(0, 3, 4, 2)
    psi, grad, value = brenier_map_surrogate(*inputs)
    assert psi.shape == (0,) and grad.shape == (0, 3) and value.shape == (0,)
    grads = torch.autograd.grad(value.sum() + psi.sum(), inputs, allow_unused=True)
    assert all(g is None or float(g.abs().sum()) == 0 for g in grads)


@pytest.mark.parametrize("kwargs, message", [
    ({"probes": 0}, "probes must be an int >= 1"),
    ({"probes": 1.5}, "probes must be an int >= 1"),
    ({"tol": -1e-3}, "tol must be a finite float >= 0"),
    ({"tol": float("nan")}, "tol must be a finite float >= 0"),
    ({"max_iter": 0}, "max_iter must be an int >= 1"),
    ({"generator": 3}, "generator must be a torch.Generator"),
    ({"check": 1}, "check must be a bool"),
])
def test_bad_options_are_named(kwargs, message):
    inputs = icnn_inputs(3, 2, 3, 2)
    with pytest.raises((ValueError, TypeError), match=f"stochastic_logdet_surrogate: {message}"):
        stochastic_logdet_surrogate(*inputs, **kwargs)


def test_bad_tensors_are_named():
    x, A, b, W, w, alpha = icnn_inputs(3, 2, 3, 2)
    with pytest.raises(ValueError, match=r"stochastic_logdet_surrogate: x must have shape \[B, d\]"):
        stochastic_logdet_surrogate(x[0], A, b, W, w, alpha)
    with pytest.raises(ValueError, match="stochastic_logdet_surrogate: A must have shape"):
        stochastic_logdet_surrogate(x, A[:, :, :1], b, W, w, alpha)
    with pytest.raises(TypeError, match="stochastic_logdet_surrogate: x and A must have the same dtype"):
        stochastic_logdet_surrogate(x, A.float(), b, W, w, alpha)
    with pytest.raises(TypeError, match="stochastic_logdet_surrogate: x must be float32 or float64"):
        stochastic_logdet_surrogate(*[t.detach().half() for t in (x, A, b, W, w, alpha)])
    with pytest.raises(TypeError, match="stochastic_logdet_surrogate: W must be a torch.Tensor"):
        stochastic_logdet_surrogate(x, A, b, [[1.0]], w, alpha)


def test_double_backward_is_refused():
    inputs = icnn_inputs(4, 2, 3, 2)
    value = stochastic_logdet_surrogate(*inputs)
    (gx,) = torch.autograd.grad(value.sum(), inputs[:1], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(gx.sum(), inputs[1:2])


def test_reference_path_gives_the_same_gradients():
    """use_reference_ops(): CP-Flow's own schedule (start at v, batch-wide stop) by autograd; the
    same probes (same generator state) and a tight tol give the same gradients."""
    inputs = icnn_inputs(5, 3, 4, 2)
    fused = stochastic_logdet_surrogate(*inputs, tol=1e-13, max_iter=30, generator=torch.Generator().manual_seed(4))
    with use_reference_ops():
        ref = stochastic_logdet_surrogate(*inputs, tol=1e-13, max_iter=30, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(torch.autograd.grad(fused.sum(), inputs), torch.autograd.grad(ref.sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_opcheck_and_compile():
    inputs = icnn_inputs(6, 3, 5, 2)
    probes = torch.randint(0, 2, (2, 6, 3), generator=torch.Generator().manual_seed(0)).double() * 2 - 1
    torch.library.opcheck(surrogate_module._brenier_surrogate, (*inputs, probes, 1e-10, 20))

    def loss(*tensors):
        psi, grad, value, *_ = surrogate_module._brenier_surrogate(*tensors, probes, 1e-10, 20)
        return psi.sum() + grad.square().sum() + value.sum()

    eager = torch.autograd.grad(loss(*inputs), inputs)
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend="aot_eager")(*inputs), inputs)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_saturated_units_keep_the_exact_gradient(cpu_path):
    # Pre-activations near 30: σ'' ≈ e^-30 ≈ 1e-13, where σ'(1 − σ') keeps only ~3 digits in float64
    # (the surrogate's Python sweep once used it while the tiled CG used the exact form: the
    # gradients then drifted from the exact op's by 0.4% on a fuzz case with α = 0). σ'' must be
    # computed as σ'(a) σ'(−a), as csrc/math/softplus.h does.
    B, d = 5, 3
    x, A, b, W, w, alpha = (t.detach() for t in icnn_inputs(B, d, 4, 2))
    inputs = [x, A, b + 30.0, W, w, torch.tensor(1e-14, dtype=torch.float64)]
    inputs = [t.requires_grad_() for t in inputs]
    probes = all_signs(B, d)
    surrogate = surrogate_module._brenier_surrogate(*inputs, probes, 1e-14, 10 * d)[2]
    (g,) = weights_for((B,))
    got = grads_of([surrogate], inputs, [g])
    want = grads_of([brenier_logdet(*inputs)], inputs, [g])
    for name, a, e in zip(NAMES, got, want):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=0, msg=lambda m: f"{name}: {m}")
