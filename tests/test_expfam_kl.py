"""ivae_ext.ops.expfam_kl: the fused KL against its reference, autograd, torch integration, errors."""

from __future__ import annotations

import pytest
import torch

import ivae_ext
from ivae_ext import reference
from ivae_ext.ops import expfam_kl

from helpers import DEVICES, FAMILIES, REDUCTIONS, call_with_fake_tensors, kl_inputs, outputs_and_grads

pytestmark = pytest.mark.skipif(not ivae_ext.HAS_EXTENSION, reason="compiled extension required")

# p shapes the op broadcasts against q's [B, d] = [7, 5], without copies.
P_SHAPES = [(7, 5), (5,), (1, 5), (7, 1), (1, 1), (1,), ()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p_shape", P_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_reference_float64(family, reduction, p_shape, device):
    inputs = kl_inputs(7, 5, p_shape, torch.float64, device)
    fused = outputs_and_grads(expfam_kl, inputs, family, reduction)
    expected = outputs_and_grads(reference.expfam_kl, inputs, family, reduction)
    for name, got, want in zip(("kl", "q_loc", "q_log_scale", "p_loc", "p_log_scale"), fused, expected):
        assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p_shape", [(300, 40), (40,), ()])
@pytest.mark.parametrize("family", FAMILIES)
def test_float32_matches_float64_reference(family, p_shape, device):
    """Large enough for several threads and chunks; float32 within 1e-5 of the exact value."""
    inputs = kl_inputs(300, 40, p_shape, torch.float32, device)
    fused = outputs_and_grads(expfam_kl, inputs, family, "sum")
    exact = outputs_and_grads(reference.expfam_kl, [t.double() for t in inputs], family, "sum")
    for got, want in zip(fused, exact):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_wide_range_of_scale_ratios(family):
    """log-scale differences from -30 to 30 exercise exp/expm1 far from 0, where KL ~ e^60."""
    diff = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64)
    q_loc = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64).reshape(-1, 1)
    q_log_scale = diff.reshape(-1, 1)
    p_loc, p_log_scale = torch.zeros(1, dtype=torch.float64), torch.full((1,), 0.25, dtype=torch.float64)
    got = expfam_kl(q_loc, q_log_scale, p_loc, p_log_scale, family, "none")
    want = reference.expfam_kl(q_loc, q_log_scale, p_loc, p_log_scale, family, "none")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert (got >= 0).all(), "KL must be non-negative"


@pytest.mark.parametrize("family, dist", [("gaussian", torch.distributions.Normal), ("laplace", torch.distributions.Laplace)])
def test_matches_torch_distributions(family, dist):
    torch.manual_seed(1)
    q_loc, p_loc = torch.randn(6, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    q_scale, p_scale = torch.rand(6, 4, dtype=torch.float64) + 0.2, torch.rand(4, dtype=torch.float64) + 0.2
    got = expfam_kl(q_loc, q_scale.log(), p_loc, p_scale.log(), family, "none")
    want = torch.distributions.kl_divergence(dist(q_loc, q_scale), dist(p_loc, p_scale))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_identical_distributions_have_zero_kl():
    q_loc, q_log_scale = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for family in FAMILIES:
        kl = expfam_kl(q_loc, q_log_scale, q_loc, q_log_scale, family, "none")
        assert torch.equal(kl, torch.zeros_like(kl)), f"{family}: KL(q || q) = {kl}"


def test_python_numbers_as_p():
    q_loc, q_log_scale = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(
        expfam_kl(q_loc, q_log_scale, 0.0, 0.0), expfam_kl(q_loc, q_log_scale, torch.tensor(0.0), torch.tensor(0.0))
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_compute_in_float32(dtype, device):
    inputs = [t.to(dtype) for t in kl_inputs(64, 16, (16,), torch.float32, device)]
    fused = outputs_and_grads(expfam_kl, inputs, "gaussian", "sum")
    exact = outputs_and_grads(reference.expfam_kl, [t.double() for t in inputs], "gaussian", "sum")
    tolerance = 1e-2 if dtype == torch.float16 else 3e-2  # one rounding to the output dtype
    for got, want in zip(fused, exact):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    base = kl_inputs(6, 8, (6, 8), torch.float64, device)
    strided = [t.detach().t().contiguous().t().requires_grad_() for t in base]  # column-major
    assert not strided[0].is_contiguous()
    fused = outputs_and_grads(expfam_kl, strided, "laplace", "none")
    expected = outputs_and_grads(reference.expfam_kl, base, "laplace", "none")
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction, shape", [("sum", (0,)), ("none", (0, 5))])
def test_empty_batch_gives_empty_result(reduction, shape, device):
    q = torch.zeros(0, 5, device=device, requires_grad=True)
    p = torch.zeros(5, device=device, requires_grad=True)
    kl = expfam_kl(q, q, p, p, "gaussian", reduction)
    assert kl.shape == shape
    kl.sum().backward()
    assert q.grad.shape == (0, 5)
    assert torch.equal(p.grad, torch.zeros(5, device=device)), "no rows: p's gradient is zero"


def test_zero_dimensions_give_zero_kl():
    q = torch.zeros(3, 0)
    assert torch.equal(expfam_kl(q, q, q, q), torch.zeros(3))


@pytest.mark.parametrize("family", FAMILIES)
def test_nan_propagates_to_its_row_only(family):
    q_loc, q_log_scale = torch.randn(4, 3), torch.randn(4, 3)
    q_loc[2, 1] = float("nan")
    kl = expfam_kl(q_loc, q_log_scale, 0.0, 0.0, family)
    assert torch.isnan(kl[2]), "a NaN input must give NaN, not be dropped"
    assert torch.isfinite(kl[[0, 1, 3]]).all(), "other rows must be unaffected"


def test_reduced_gradients_are_reproducible():
    inputs = kl_inputs(5000, 33, (33,), torch.float32, "cpu")
    first = outputs_and_grads(expfam_kl, inputs, "gaussian", "sum")
    second = outputs_and_grads(expfam_kl, inputs, "gaussian", "sum")
    for a, b in zip(first, second):
        assert torch.equal(a, b), "results must not depend on thread scheduling"


# --- autograd, opcheck, compile, export ---------------------------------------------------------


@pytest.mark.parametrize("p_shape", [(4, 3), (3,), (4, 1), ()])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck(family, reduction, p_shape):
    inputs = kl_inputs(4, 3, p_shape, torch.float64, "cpu")
    assert torch.autograd.gradcheck(lambda *t: expfam_kl(*t, family, reduction), inputs)


def test_gradient_only_for_inputs_that_require_it():
    q_loc, q_log_scale = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    p_loc, p_log_scale = torch.randn(3), torch.randn(3, requires_grad=True)
    expfam_kl(q_loc, q_log_scale, p_loc, p_log_scale).sum().backward()
    assert q_loc.grad is not None and p_log_scale.grad is not None
    assert q_log_scale.grad is None and p_loc.grad is None


def test_double_backward_is_a_clear_error():
    q_loc = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(expfam_kl(q_loc, q_loc * 0, 0.0, 0.0).sum(), q_loc, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        grad.sum().backward()


@pytest.mark.parametrize("p_shape", [(4, 3), (3,), (4, 1), ()])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_opcheck(family, requires_grad, p_shape):
    inputs = [t.detach().requires_grad_(requires_grad) for t in kl_inputs(4, 3, p_shape, torch.float32, "cpu")]
    for reduction in REDUCTIONS:
        torch.library.opcheck(torch.ops.ivae_ext.expfam_kl.default, (*inputs, family, reduction))


@pytest.mark.parametrize("mask", [[True, True, True, True], [True, False, False, True]])
def test_opcheck_backward(mask):
    q_loc, q_log_scale, p_loc, p_log_scale = (t.detach() for t in kl_inputs(4, 3, (3,), torch.float32, "cpu"))
    grad = torch.randn(4)
    torch.library.opcheck(
        torch.ops.ivae_ext.expfam_kl_backward.default,
        (grad, q_loc, q_log_scale, p_loc, p_log_scale, "laplace", "sum", mask),
    )


def _vae_kl_term(mu, log_var, prior_loc, prior_log_scale):
    return expfam_kl(mu, 0.5 * log_var, prior_loc, prior_log_scale).mean()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    compiled = torch.compile(_vae_kl_term, fullgraph=True, backend=backend)
    inputs = kl_inputs(8, 4, (4,), torch.float64, "cpu")
    eager = outputs_and_grads(_vae_kl_term, inputs)
    got = outputs_and_grads(compiled, inputs)
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b)


def test_torch_export():
    class KlTerm(torch.nn.Module):
        def forward(self, mu, log_var, prior_loc, prior_log_scale):
            return _vae_kl_term(mu, log_var, prior_loc, prior_log_scale)

    inputs = tuple(t.detach() for t in kl_inputs(8, 4, (4,), torch.float32, "cpu"))
    exported = torch.export.export(KlTerm(), inputs)
    assert "ivae_ext.expfam_kl" in str(exported.graph), "the fused op must stay one node in the graph"
    torch.testing.assert_close(exported.module()(*inputs), KlTerm()(*inputs))


# --- errors a user gets -----------------------------------------------------------------------


def _good(batch=4, dim=3):
    return [torch.randn(batch, dim), torch.randn(batch, dim), torch.randn(dim), torch.randn(dim)]


@pytest.mark.parametrize("backend", ["kernel", "fake"])
@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda a: a.__setitem__(0, torch.randn(12)), ValueError, r"q_loc must have shape \[B, d\], got \[12\]"),
        (lambda a: a.__setitem__(1, torch.randn(4, 2)), ValueError, r"q_log_scale must have q_loc's shape \[4, 3\], got \[4, 2\]"),
        (lambda a: a.__setitem__(2, torch.randn(5)), ValueError, r"p_loc must be broadcastable to q_loc's shape \[B, d\] = \[4, 3\].*got \[5\]"),
        (lambda a: a.__setitem__(3, torch.randn(2, 4, 3)), ValueError, r"p_log_scale must be broadcastable.*got \[2, 4, 3\]"),
        (lambda a: a.__setitem__(2, torch.randn(3, dtype=torch.float64)), TypeError, r"q_loc and p_loc must have the same dtype"),
        (lambda a: a.__setitem__(1, torch.ones(4, 3, dtype=torch.int64)), TypeError, r"q_log_scale must be a floating-point tensor"),
    ],
)
def test_bad_arguments_are_named(change, error, message, backend):
    args = _good()
    change(args)
    call = (lambda: call_with_fake_tensors(torch.ops.ivae_ext.expfam_kl, args, "gaussian", "sum")) if backend == "fake" else (lambda: expfam_kl(*args))
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("kwargs, message", [
    ({"family": "poisson"}, r"family must be one of \('gaussian', 'laplace'\), got 'poisson'"),
    ({"reduction": "mean"}, r"reduction must be one of \('sum', 'none'\), got 'mean'"),
])
def test_unknown_family_or_reduction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        expfam_kl(*_good(), **kwargs)


def test_mixed_devices_are_named():
    args = _good()
    args[3] = torch.randn(3, device="meta")
    with pytest.raises(ValueError, match=r"q_loc and p_log_scale must be on the same device, got cpu and meta"):
        expfam_kl(*args)


def test_wrong_upstream_gradient_shape():
    with pytest.raises(ValueError, match=r"grad must have the output's shape \[4\], got \[4, 3\]"):
        torch.ops.ivae_ext.expfam_kl_backward(torch.randn(4, 3), *_good(), "gaussian", "sum", [True] * 4)


def test_p_that_is_not_a_tensor_or_number():
    with pytest.raises(TypeError, match="p_loc must be a torch.Tensor or a real number, got str"):
        expfam_kl(torch.randn(2, 2), torch.randn(2, 2), "zero", 0.0)


# --- found by the hostile-input fuzzer (tests/fuzz_ops.py) --------------------------------------


@pytest.mark.parametrize("index, value", [(0, [[0.0, 1.0]]), (1, None)], ids=["q_loc list", "q_log_scale None"])
def test_q_that_is_not_a_tensor_is_named(index, value):
    """Was AttributeError ('list' object has no attribute 'dtype') or the dispatcher's
    "tensor does not have a device"."""
    args = _good()
    args[index] = value
    name = ("q_loc", "q_log_scale")[index]
    with pytest.raises(TypeError, match=rf"expfam_kl: {name} must be a torch.Tensor, got {type(value).__name__}"):
        expfam_kl(*args)


@pytest.mark.parametrize("kwargs", [{"family": None}, {"reduction": True}])
def test_family_or_reduction_that_is_not_a_string_is_named(kwargs):
    """Was a pybind11 cast error from the dispatcher."""
    with pytest.raises(ValueError, match=rf"expfam_kl: {next(iter(kwargs))} must be one of"):
        expfam_kl(*_good(), **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_laplace_q_far_narrower_than_its_distance_stays_exact(dtype):
    """u = |D|/b_q huge (or e^-l_q overflowing): KL = l_p - l_q + |D|/b_p - 1 + e^w. Was NaN in
    float32 (inf - inf) and 0 instead of 1.3e30 in float64 (u swallowed l_p)."""
    q_loc = torch.tensor([[1.0, 0.77]], dtype=dtype, requires_grad=True)
    q_log_scale = torch.tensor([[-100.0, -662.0]], dtype=dtype, requires_grad=True)
    p_loc = torch.tensor([[0.0, 768.8]], dtype=dtype, requires_grad=True)
    p_log_scale = torch.tensor([[0.0, 1.3e30]], dtype=dtype, requires_grad=True)
    args = (q_loc, q_log_scale, p_loc, p_log_scale)
    want = torch.tensor([[1.0 + 100.0 - 1.0, 1.3e30 + 662.0 - 1.0]], dtype=torch.float64)
    for fn in (expfam_kl, reference.expfam_kl):
        kl = fn(*args, "laplace", "none")
        torch.testing.assert_close(kl.double(), want, rtol=1e-6, atol=0, msg=fn.__module__)
    kl = expfam_kl(*args, "laplace", "none")
    grads = torch.autograd.grad(kl[0, 0], args)
    # dKL/d(q_loc, l_q, p_loc, l_p) = (1/b_p)(1 - e^-u), -1 + e^w (1 + u), -(1/b_p)(1 - e^-u), 1 - |D|/b_p - e^w
    for got, want_grad in zip(grads, (1.0, -1.0, -1.0, 0.0)):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got[0, 0].double(), torch.tensor(want_grad, dtype=torch.float64), rtol=1e-6, atol=1e-6)


@pytest.fixture
def ieee_denormals():
    """Denormals on (the IEEE default): the iVAE runner turns flush-to-zero on process-wide for
    speed, and an earlier test in the same process would then flush the reference's e^-710 to 0."""
    torch.set_flush_denormal(False)
    yield


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype, delta, log_scale", [(torch.float64, 1e308, 710.0), (torch.float32, 3e38, 88.0)])
def test_huge_distance_over_huge_scale_is_not_dropped(family, dtype, delta, log_scale, ieee_denormals):
    """|Δ| e^-l_p with e^-l_p below exp's range (e^-710 in double) but |Δ| e^-l_p ~ 0.5: the KL's
    z²/2 (Gaussian) or |Δ|/b_p (Laplace) term was silently 0 (exp underflowed to 0 first)."""
    q_loc = torch.tensor([[0.0]], dtype=dtype)
    q_log_scale = torch.tensor([[0.0]], dtype=dtype)
    p_loc = torch.tensor([[delta]], dtype=dtype)
    p_log_scale = torch.tensor([[log_scale]], dtype=dtype)
    got = expfam_kl(q_loc, q_log_scale, p_loc, p_log_scale, family, "none")
    want = reference.expfam_kl(*(t.double() for t in (q_loc, q_log_scale, p_loc, p_log_scale)), family, "none")
    torch.testing.assert_close(got.double(), want, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
