"""ivae_ext.ops.icnn_map: fused ψ and ∇ψ against the autograd reference, gradients, torch integration, errors."""

from __future__ import annotations

import pytest
import torch

from ivae_ext import reference
from ivae_ext.ops import icnn_map
from ivae_ext.ops.icnn_map import HAS_FUSED_ICNN

from helpers import DEVICES, icnn_inputs

pytestmark = pytest.mark.skipif(not HAS_FUSED_ICNN, reason="compiled op required")

# (B, d, H, K), including the degenerate K = 1, d = 1, H = 1. The last two reach the CPU tiles'
# edges (cpu/tile_gemm.h): H = 70 and 100 need every tile width, d = 9 a padded column, B = 7 a
# row tail, and 300 rows several cache-sized sub-blocks (cpu/icnn_tiled.cpp).
SHAPES = [(9, 3, 8, 3), (6, 1, 5, 2), (5, 4, 1, 2), (7, 2, 6, 1), (4, 1, 1, 1), (33, 5, 40, 4), (300, 9, 70, 3),
          (7, 16, 100, 2)]
NAMES = ("x", "A", "b", "W", "w", "alpha")


def outputs_and_grads(fn, inputs):
    """(ψ, ∇ψ) and the gradients of a random projection of both w.r.t. every input."""
    psi, grad = fn(*inputs)
    gen = torch.Generator().manual_seed(1)
    weight_psi = torch.randn(psi.shape, generator=gen, dtype=torch.float64).to(psi)
    weight_grad = torch.randn(grad.shape, generator=gen, dtype=torch.float64).to(grad)
    loss = (psi * weight_psi).sum() + (grad * weight_grad).sum()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]  # W unused when K = 1
    return [psi.detach(), grad.detach(), *grads]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-d{}-H{}-K{}".format(*s))
def test_matches_reference_float64(shape, device):
    inputs = icnn_inputs(*shape, device=device)
    fused = outputs_and_grads(icnn_map, inputs)
    expected = outputs_and_grads(reference.icnn_map, inputs)
    for name, got, want in zip(("psi", "grad") + NAMES, fused, expected):
        assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_float32_matches_float64_reference(device):
    inputs = icnn_inputs(300, 8, 64, 3, dtype=torch.float32, device=device)
    fused = outputs_and_grads(icnn_map, inputs)
    exact = outputs_and_grads(reference.icnn_map, [t.detach().double().requires_grad_() for t in inputs])
    for name, got, want in zip(("psi", "grad") + NAMES, fused, exact):
        assert got.dtype == torch.float32
        scale = want.abs().max().clamp_min(1.0)  # sums over the batch: compare relative to their size
        torch.testing.assert_close(got.double() / scale, want / scale, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("threads", [2, 3])
def test_row_blocks_per_thread_match_reference_and_are_deterministic(threads):
    # With several threads the CPU kernels split the batch into one row block per thread and sum
    # the blocks' parameter gradients (cpu/icnn_map.cpp); 200 rows over 3 threads gives uneven blocks.
    inputs = icnn_inputs(200, 3, 16, 3)
    expected = outputs_and_grads(reference.icnn_map, inputs)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        first = outputs_and_grads(icnn_map, inputs)
        again = outputs_and_grads(icnn_map, inputs)
    finally:
        torch.set_num_threads(previous)
    for name, got, repeat, want in zip(("psi", "grad") + NAMES, first, again, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")
        assert torch.equal(got, repeat), f"{name}: two calls with {threads} threads differ"


def test_large_pre_activations_stay_exact():
    """Softplus far in both tails (|a| ~ 40): no overflow, and the linear tail is not truncated."""
    inputs = icnn_inputs(6, 2, 5, 2)
    with torch.no_grad():
        inputs[2].mul_(40.0)
    fused = outputs_and_grads(icnn_map, inputs)
    expected = outputs_and_grads(reference.icnn_map, inputs)
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(4, 2, 3, 2), (3, 1, 2, 1), (3, 2, 2, 3)])
def test_gradcheck(shape):
    inputs = icnn_inputs(*shape)
    assert torch.autograd.gradcheck(lambda *t: icnn_map(*t), inputs)


def test_alpha_as_float_has_no_gradient_and_matches_tensor_alpha():
    x, A, b, W, w, alpha = icnn_inputs(5, 3, 4, 2)
    psi_f, grad_f = icnn_map(x, A, b, W, w, 0.3)
    psi_t, grad_t = icnn_map(x, A, b, W, w, alpha)
    torch.testing.assert_close(psi_f, psi_t)
    torch.testing.assert_close(grad_f, grad_t)


@pytest.mark.parametrize("use", ["psi", "grad"])
def test_loss_on_one_output_only(use):
    """Autograd leaves the unused output's gradient undefined; the backward must treat it as 0."""
    inputs = icnn_inputs(5, 3, 4, 2)

    def loss(fn):
        psi, grad = fn(*inputs)
        return psi.sum() if use == "psi" else (grad**2).sum()

    got = torch.autograd.grad(loss(icnn_map), inputs)
    want = torch.autograd.grad(loss(reference.icnn_map), inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_only_requested_gradients_are_computed():
    x, A, b, W, w, alpha = (t.detach() for t in icnn_inputs(5, 3, 4, 2))
    W.requires_grad_()
    psi, grad = icnn_map(x, A, b, W, w, alpha)
    (psi.sum() + grad.sum()).backward()
    assert W.grad is not None and W.grad.shape == W.shape
    assert x.grad is None and A.grad is None and w.grad is None


@pytest.mark.parametrize("hidden", [24, 96])
def test_tiled_cpu_kernels_match_the_aten_gemm_path(monkeypatch, hidden):
    # IVAE_ICNN_CPU_PATH=aten|tiles forces the ATen-GEMM sequence CUDA uses (ops/icnn_map.cpp) or the
    # tiles on the CPU; unset, H <= 64 takes the tiles and wider nets the ATen GEMMs.
    inputs = icnn_inputs(130, 6, hidden, 3, dtype=torch.float32)
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", "tiles")
    tiled = outputs_and_grads(icnn_map, inputs)
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", "aten")
    aten = outputs_and_grads(icnn_map, inputs)
    monkeypatch.delenv("IVAE_ICNN_CPU_PATH")
    default = outputs_and_grads(icnn_map, inputs)
    for name, got, want in zip(("psi", "grad") + NAMES, tiled, aten):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
    for got, want in zip(default, tiled if hidden <= 64 else aten):  # the default is exactly one of them
        assert torch.equal(got, want)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    inputs = icnn_inputs(0, 3, 4, 2, device=device)
    psi, grad = icnn_map(*inputs)
    assert psi.shape == (0,) and grad.shape == (0, 3)
    (psi.sum() + grad.sum()).backward()
    assert torch.equal(inputs[1].grad, torch.zeros_like(inputs[1])), "no rows: A's gradient is zero"


def test_non_contiguous_inputs():
    inputs = icnn_inputs(6, 3, 5, 2)
    strided = [t.detach().transpose(0, -1).contiguous().transpose(0, -1).requires_grad_() if t.dim() >= 2 else t for t in inputs]
    assert not strided[0].is_contiguous()
    for got, want in zip(outputs_and_grads(icnn_map, strided), outputs_and_grads(reference.icnn_map, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_nan_input_propagates_to_its_row_only():
    x, A, b, W, w, alpha = (t.detach() for t in icnn_inputs(4, 3, 5, 2))
    x[1, 0] = float("nan")
    psi, grad = icnn_map(x, A, b, W, w, alpha)
    assert torch.isnan(psi[1]) and torch.isnan(grad[1]).all()
    assert torch.isfinite(psi[[0, 2, 3]]).all() and torch.isfinite(grad[[0, 2, 3]]).all()


def test_double_backward_is_a_clear_error():
    inputs = icnn_inputs(4, 2, 3, 2)
    psi, grad = icnn_map(*inputs)
    (x_grad,) = torch.autograd.grad((grad**2).sum(), inputs[0], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        x_grad.sum().backward()


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (3, 2, 4, 1)])
def test_opcheck(shape, requires_grad):
    inputs = [t.detach().float().requires_grad_(requires_grad) for t in icnn_inputs(*shape)]
    torch.library.opcheck(torch.ops.ivae_ext.icnn_map.default, tuple(inputs))


def test_opcheck_backward():
    inputs = [t.detach().float() for t in icnn_inputs(4, 3, 5, 3)]
    _, _, saved = torch.ops.ivae_ext.icnn_map(*inputs)
    args = (torch.randn(4), torch.randn(4, 3), *inputs, saved, [True, True, False, True, True, True])
    torch.library.opcheck(torch.ops.ivae_ext.icnn_map_backward.default, args)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    def transport_cost(x, A, b, W, w, alpha):
        psi, grad = icnn_map(x, A, b, W, w, alpha)
        return ((grad - x) ** 2).sum(-1).mean() + psi.mean()

    torch._dynamo.reset()
    compiled = torch.compile(transport_cost, fullgraph=True, backend=backend)
    inputs = icnn_inputs(8, 3, 6, 2)
    eager = torch.autograd.grad(transport_cost(*inputs), inputs)
    got = torch.autograd.grad(compiled(*inputs), inputs)
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b)


# --- errors a user gets -----------------------------------------------------------------------


def _good():
    return [t.detach() for t in icnn_inputs(4, 3, 5, 2)]


@pytest.mark.parametrize("backend", ["kernel", "fake"])
@pytest.mark.parametrize(
    "index, value, error, message",
    [
        (0, torch.randn(12, dtype=torch.float64), ValueError, r"x must have shape \[B, d\], got \[12\]"),
        (1, torch.randn(2, 5, 4, dtype=torch.float64), ValueError, r"A must have shape \[K, H, d\] with K, H >= 1 and d = 3, got \[2, 5, 4\]"),
        (2, torch.randn(2, 4, dtype=torch.float64), ValueError, r"b must have shape \[2, 5\] \(K=2, H=5\), got \[2, 4\]"),
        (3, torch.rand(2, 5, 5, dtype=torch.float64), ValueError, r"W must have shape \[1, 5, 5\] \(K=2, H=5\), got \[2, 5, 5\]"),
        (4, torch.rand(6, dtype=torch.float64), ValueError, r"w must have shape \[5\] \(K=2, H=5\), got \[6\]"),
        (4, torch.rand(5, dtype=torch.float32), TypeError, r"x and w must have the same dtype"),
        (1, torch.ones(2, 5, 3, dtype=torch.int64), TypeError, r"A must be a floating-point tensor"),
        (5, torch.ones(2, dtype=torch.float64), ValueError, r"alpha must be a float or a 0-d tensor, got shape \[2\]"),
    ],
)
def test_bad_arguments_are_named(index, value, error, message, backend):
    args = _good()
    args[index] = value
    if backend == "fake":
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode() as mode:
            fake = [mode.from_tensor(a) for a in args]
            with pytest.raises(error, match=message):
                torch.ops.ivae_ext.icnn_map(*fake)
    else:
        with pytest.raises(error, match=message):
            icnn_map(*args)


@pytest.mark.parametrize("alpha", [-0.5, torch.tensor(-0.5, dtype=torch.float64)], ids=["float", "tensor"])
def test_negative_alpha_is_refused(alpha):
    x, A, b, W, w, _ = _good()
    with pytest.raises(ValueError, match=r"alpha must be >= 0 \(strong convexity\), got -0.5"):
        icnn_map(x, A, b, W, w, alpha)


def test_mixed_devices_are_named():
    x, A, b, W, w, alpha = _good()
    with pytest.raises(ValueError, match=r"x and w must be on the same device, got cpu and meta"):
        icnn_map(x, A, b, W, torch.rand(5, dtype=torch.float64, device="meta"), alpha)


# --- found by the hostile-input fuzzer (tests/fuzz_ops.py) --------------------------------------


@pytest.mark.parametrize("index, value", [(1, None), (3, [[0.5]]), (0, "x")], ids=["A None", "W list", "x str"])
def test_argument_that_is_not_a_tensor_is_named(index, value):
    """Was "tensor does not have a device" (None), a pybind11 cast error, or AttributeError."""
    args = _good()
    args[index] = value
    name = ("x", "A", "b", "W", "w")[index]
    with pytest.raises(TypeError, match=rf"icnn_map: {name} must be a torch.Tensor, got {type(value).__name__}"):
        icnn_map(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_alpha_zero_with_huge_x_is_finite(dtype):
    """With α = 0 the quadratic term is exactly 0, also where ‖x‖² overflows (it was 0·inf = NaN
    in float32 for |x| ~ 1e30, whose ψ is finite)."""
    x, A, b, W, w, _ = _good()
    x = torch.full_like(x, -1.9e30 if dtype == torch.float32 else 1e200).to(dtype)
    A = (A * 1e-31 if dtype == torch.float32 else A * 1e-201).to(dtype)
    b, W, w = b.to(dtype), W.to(dtype), w.to(dtype)
    alpha = torch.tensor(0.0, dtype=dtype)
    psi, grad = icnn_map(x, A, b, W, w, alpha)
    want_psi, want_grad = reference.icnn_map(*(t.double() for t in (x, A, b, W, w, alpha)))
    assert torch.isfinite(psi).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(psi.double(), want_psi.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(grad.double(), want_grad.detach(), rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), torch.tensor(float("nan"), dtype=torch.float64),
                                   torch.tensor(float("inf"), dtype=torch.float64)],
                         ids=["nan", "inf", "nan tensor", "inf tensor"])
@pytest.mark.parametrize("path", ["fused", "reference"])
def test_alpha_must_be_finite_and_not_nan(alpha, path):
    """NaN α passed the reference path's `alpha < 0` check, and α = inf was accepted everywhere
    (ψ = ½·inf·‖x‖²: inf, or NaN at x = 0 or d = 0)."""
    from ivae_ext.ops import use_reference_ops

    x, A, b, W, w, _ = _good()
    with use_reference_ops(path == "reference"):
        with pytest.raises(ValueError, match=r"icnn_map: alpha must be (>= 0|finite)"):
            icnn_map(x, A, b, W, w, alpha)
