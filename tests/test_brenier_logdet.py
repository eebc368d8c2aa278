"""ivae_ext.ops.brenier_logdet / brenier_map_logdet: exact log det ∇²ψ against vmap(hessian) +
slogdet, gradients, the non-positive-definite policy, torch integration, errors."""

from __future__ import annotations

import pytest
import torch

from ivae_ext import reference
from ivae_ext.ops import brenier_logdet, brenier_map_logdet, icnn_map
from ivae_ext.ops.brenier_logdet import HAS_FUSED_LOGDET

from helpers import DEVICES, icnn_inputs

pytestmark = pytest.mark.skipif(not HAS_FUSED_LOGDET, reason="compiled op required")

# (B, d, H, K), including d = 1, K = 1 and H = 1.
# The last two reach the CPU tiles' edges (cpu/tile_gemm.h: H = 70 and 40 need several tile widths,
# d = 9 a padded column, odd batches a row tail) and several cache-sized sub-blocks (cpu/brenier_tiled.cpp).
SHAPES = [(9, 3, 8, 3), (6, 1, 5, 2), (7, 2, 6, 1), (5, 4, 1, 2), (4, 1, 1, 1), (33, 5, 40, 4), (61, 9, 70, 3),
          (7, 16, 40, 2)]
NAMES = ("x", "A", "b", "W", "w", "alpha")


def weighted_grads(outputs, inputs, seed=1):
    """Gradients of a random projection of every output w.r.t. every input (zeros when unused)."""
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum() for o in outputs)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


def reference_all(*inputs):
    psi, grad = reference.icnn_map(*inputs)
    return psi, grad, reference.brenier_logdet(*inputs)


def assert_all_close(got, want, names, rtol, atol):
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, f"{name}: shape {tuple(g.shape)} != {tuple(w.shape)}"
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-d{}-H{}-K{}".format(*s))
def test_logdet_and_its_gradients_match_reference_float64(shape, device):
    inputs = icnn_inputs(*shape, device=device)
    got = brenier_logdet(*inputs)
    want = reference.brenier_logdet(*inputs)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert_all_close(weighted_grads([got], inputs), weighted_grads([want], inputs), NAMES, 1e-9, 1e-9)


@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: "B{}-d{}-H{}-K{}".format(*s))
def test_combined_outputs_and_gradients_through_all_three(shape):
    inputs = icnn_inputs(*shape)
    got = brenier_map_logdet(*inputs)
    want = reference_all(*inputs)
    assert_all_close(got, want, ("psi", "grad", "logdet"), 1e-10, 1e-10)
    assert_all_close(weighted_grads(got, inputs), weighted_grads(want, inputs), NAMES, 1e-9, 1e-9)


@pytest.mark.parametrize("used", ["psi", "grad", "logdet"])
def test_gradient_through_one_output_only(used):
    inputs = icnn_inputs(6, 3, 5, 2)
    index = ("psi", "grad", "logdet").index(used)
    got = weighted_grads([brenier_map_logdet(*inputs)[index]], inputs)
    want = weighted_grads([reference_all(*inputs)[index]], inputs)
    assert_all_close(got, want, NAMES, 1e-9, 1e-9)


@pytest.mark.parametrize("wanted", [(0,), (3,), (1, 5), (2, 4), (0, 1, 2, 3, 4, 5)], ids=lambda w: "-".join(NAMES[i] for i in w))
def test_tiled_backward_computes_each_subset_of_gradients(wanted, monkeypatch):
    # The tiles (cpu/brenier_tiled_backward.cpp) skip the GEMMs of gradients nobody asked for; the
    # ATen sequence is the other implementation. 61 samples of d = 9: several 128-row chunks of
    # the long reductions, H = 13 not a multiple of the tile width.
    inputs = icnn_inputs(61, 9, 13, 3)
    chosen = [inputs[i] for i in wanted]
    monkeypatch.setenv("IVAE_LOGDET_FORM", "full")
    tiled = torch.autograd.grad(brenier_logdet(*inputs).sum(), chosen)
    want = torch.autograd.grad(reference.brenier_logdet(*inputs).sum(), chosen)
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", "aten")
    aten = torch.autograd.grad(brenier_logdet(*inputs).sum(), chosen)
    names = [NAMES[i] for i in wanted]
    assert_all_close(tiled, want, names, 1e-9, 1e-9)
    assert_all_close(tiled, aten, names, 1e-11, 1e-11)


def test_map_outputs_equal_icnn_map():
    inputs = [t.detach() for t in icnn_inputs(10, 3, 7, 3)]
    psi, grad, _ = brenier_map_logdet(*inputs)
    psi_map, grad_map = icnn_map(*inputs)
    torch.testing.assert_close(psi, psi_map, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(grad, grad_map, rtol=1e-13, atol=1e-13)


def test_bruteforce_reference_agrees_with_vmap_hessian():
    inputs = icnn_inputs(8, 4, 6, 3)
    torch.testing.assert_close(reference.brenier_logdet_bruteforce(*inputs), reference.brenier_logdet(*inputs))


@pytest.mark.parametrize("device", DEVICES)
def test_float32_matches_float64_reference(device):
    inputs64 = icnn_inputs(64, 4, 16, 3)
    inputs32 = [t.detach().float().to(device).requires_grad_() for t in inputs64]
    got = brenier_logdet(*inputs32)
    want = reference.brenier_logdet(*inputs64)
    torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=1e-4, atol=1e-4)
    got_grads = [g.double().cpu() for g in weighted_grads([got], inputs32)]
    assert_all_close(got_grads, weighted_grads([want], inputs64), NAMES, 1e-4, 1e-4)


def test_tiled_cpu_kernels_match_the_aten_gemm_path(monkeypatch):
    # IVAE_ICNN_CPU_PATH=aten runs the ATen-GEMM sequence CUDA uses (ops/brenier_logdet.cpp) on the CPU.
    inputs = icnn_inputs(90, 6, 24, 3, dtype=torch.float32)
    tiled = brenier_map_logdet(*inputs)
    tiled_grads = weighted_grads(tiled, inputs)
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", "aten")
    aten = brenier_map_logdet(*inputs)
    assert_all_close(tiled, aten, ("psi", "grad", "logdet"), 1e-4, 1e-4)
    assert_all_close(tiled_grads, weighted_grads(aten, inputs), NAMES, 1e-4, 1e-4)


@pytest.mark.parametrize("threads", [2, 3])
def test_row_blocks_per_thread_match_reference_and_are_deterministic(threads):
    # 200 rows of d=8, H=64, K=3 in float64: one row block per thread, each in cache-sized
    # sub-blocks of 44 samples (cpu/brenier_tiled.cpp); parameter gradients summed in block order.
    inputs = icnn_inputs(200, 8, 64, 3)
    want = weighted_grads([reference.brenier_logdet(*inputs)], inputs)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        first = weighted_grads([brenier_logdet(*inputs)], inputs)
        again = weighted_grads([brenier_logdet(*inputs)], inputs)
    finally:
        torch.set_num_threads(previous)
    assert_all_close(first, want, NAMES, 1e-9, 1e-9)
    for name, a, b in zip(NAMES, first, again):
        assert torch.equal(a, b), f"{name}: two calls with {threads} threads differ"


@pytest.mark.parametrize("shape", [(3, 2, 3, 2), (3, 1, 2, 1), (2, 3, 2, 3)])
def test_gradcheck(shape):
    inputs = icnn_inputs(*shape)
    assert torch.autograd.gradcheck(lambda *t: brenier_map_logdet(*t), inputs)


def test_double_backward_is_a_clear_error():
    inputs = icnn_inputs(4, 2, 3, 2)
    (x_grad,) = torch.autograd.grad(brenier_logdet(*inputs).sum(), inputs[0], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        x_grad.sum().backward()


def test_nothing_is_kept_for_backward_without_grad():
    inputs = [t.detach() for t in icnn_inputs(5, 3, 4, 2)]
    out = torch.ops.ivae_ext.brenier_logdet(*inputs, False)
    assert out[5].shape == (0, 3, 8) and out[6].shape == (0, 3, 3)
    with torch.no_grad():
        kept = torch.ops.ivae_ext.brenier_logdet(*[t.requires_grad_() for t in inputs], False)
    assert kept[5].shape[0] == 0, "under no_grad the Jacobians are not kept"


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    inputs = icnn_inputs(0, 3, 4, 2, device=device)
    logdet = brenier_logdet(*inputs)
    assert logdet.shape == (0,)
    logdet.sum().backward()
    assert torch.equal(inputs[1].grad, torch.zeros_like(inputs[1]))


# --- the non-positive-definite policy -----------------------------------------------------------


def _not_convex_inputs():
    """Sample 1 sits where negative output weights make ψ concave: Hess ψ is not PD there."""
    x, A, b, W, w, _ = (t.detach() for t in icnn_inputs(4, 2, 3, 1))
    w = -w.abs() * 50.0
    return x, A, b, W, w, torch.tensor(0.0, dtype=torch.float64)


def test_non_positive_definite_hessian_is_an_error_by_default():
    with pytest.raises(ValueError, match=r"not positive definite for 4 of 4 samples \(first: sample 0, leading minor of order 1\).*check=False"):
        brenier_logdet(*_not_convex_inputs())


def test_non_positive_definite_gives_nan_and_status_with_check_false():
    x, A, b, W, w, alpha = (t.detach() for t in icnn_inputs(5, 2, 4, 2))
    w_mixed = w.clone()
    x_bad = x.clone()
    # α = 0 and a saturated sample (all units far in the flat tail): its Hessian is ~0, not PD.
    x_bad[2] = -1e3 * A[0].sum(0).sign()
    b_flat = b.clone()
    logdet, info = brenier_logdet(x_bad, A, b_flat, W, w_mixed, 0.0, check=False, return_info=True)
    want = reference.brenier_logdet(x_bad, A, b_flat, W, w_mixed, 0.0)
    assert info.dtype == torch.int32
    bad = info != 0
    assert bad[2] and torch.isnan(logdet[2]), f"the saturated sample must be flagged, got info {info.tolist()}"
    torch.testing.assert_close(logdet[~bad], want[~bad], rtol=1e-9, atol=1e-9)


def test_nan_input_gives_nan_and_status_minus_one_not_an_error():
    x, A, b, W, w, alpha = (t.detach() for t in icnn_inputs(4, 3, 5, 2))
    x[1, 0] = float("nan")
    logdet, info = brenier_logdet(x, A, b, W, w, alpha, return_info=True)
    assert info.tolist() == [0, -1, 0, 0]
    assert torch.isnan(logdet[1]) and torch.isfinite(logdet[[0, 2, 3]]).all()


# --- torch integration --------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (3, 2, 4, 1)])
def test_opcheck(shape, requires_grad, keep):
    inputs = [t.detach().float().requires_grad_(requires_grad) for t in icnn_inputs(*shape)]
    torch.library.opcheck(torch.ops.ivae_ext.brenier_logdet.default, (*inputs, keep))


def test_opcheck_backward():
    inputs = [t.detach().float() for t in icnn_inputs(4, 3, 5, 3)]
    out = torch.ops.ivae_ext.brenier_logdet(*inputs, True)
    args = (torch.randn(4), *inputs, out[4], out[5], out[6], [True, True, False, True, True, True])
    torch.library.opcheck(torch.ops.ivae_ext.brenier_logdet_backward.default, args)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    def flow_nll(x, A, b, W, w, alpha):
        _, y, logdet = brenier_map_logdet(x, A, b, W, w, alpha, check=False)
        return (0.5 * (y**2).sum(-1) - logdet).mean()

    torch._dynamo.reset()
    compiled = torch.compile(flow_nll, fullgraph=True, backend=backend)
    inputs = icnn_inputs(8, 3, 6, 2)
    eager = torch.autograd.grad(flow_nll(*inputs), inputs)
    got = torch.autograd.grad(compiled(*inputs), inputs)
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b)


# --- errors a user gets ---------------------------------------------------------------------------


def _good():
    return [t.detach() for t in icnn_inputs(4, 3, 5, 2)]


@pytest.mark.parametrize("backend", ["kernel", "fake"])
@pytest.mark.parametrize(
    "index, value, error, message",
    [
        (0, torch.randn(12, dtype=torch.float64), ValueError, r"brenier_logdet: x must have shape \[B, d\], got \[12\]"),
        (1, torch.randn(2, 5, 4, dtype=torch.float64), ValueError, r"brenier_logdet: A must have shape \[K, H, d\] with K, H >= 1 and d = 3"),
        (3, torch.rand(2, 5, 5, dtype=torch.float64), ValueError, r"brenier_logdet: W must have shape \[1, 5, 5\] \(K=2, H=5\), got \[2, 5, 5\]"),
        (4, torch.rand(5, dtype=torch.float32), TypeError, r"brenier_logdet: x and w must have the same dtype"),
        (1, torch.ones(2, 5, 3, dtype=torch.int64), TypeError, r"brenier_logdet: A must be a floating-point tensor"),
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
                torch.ops.ivae_ext.brenier_logdet(*fake, False)
    else:
        with pytest.raises(error, match=message):
            brenier_logdet(*args)


def test_negative_alpha_is_refused():
    x, A, b, W, w, _ = _good()
    with pytest.raises(ValueError, match=r"brenier_logdet: alpha must be >= 0 \(strong convexity\), got -0.5"):
        brenier_logdet(x, A, b, W, w, -0.5)


def test_backward_without_kept_jacobians_is_named():
    inputs = _good()
    out = torch.ops.ivae_ext.brenier_logdet(*inputs, False)
    with pytest.raises(ValueError, match=r"jac must have shape \[B, d, K\*H\] = \[4, 3, 10\] \(the forward was called with keep_for_backward=False\?\)"):
        torch.ops.ivae_ext.brenier_logdet_backward(torch.ones(4, dtype=torch.float64), *inputs, out[4], out[5], out[6], [True] * 6)


# --- found by the hostile-input fuzzer (tests/fuzz_ops.py) --------------------------------------


@pytest.mark.parametrize("batch", [0, 3])
def test_zero_dimensions_give_zero_logdet(batch):
    """d = 0 (x [B, 0]): log det of a 0×0 Hessian is 0. It was a SIGFPE (integer division by d in
    the CPU kernel's block sizing) that killed the process."""
    _, _, b, W, w, alpha = icnn_inputs(batch, 1, 4, 2)
    x = torch.zeros(batch, 0, dtype=torch.float64, requires_grad=True)
    A = torch.zeros(2, 4, 0, dtype=torch.float64, requires_grad=True)
    psi, grad, logdet, info = brenier_map_logdet(x, A, b, W, w, alpha, return_info=True)
    assert grad.shape == (batch, 0) and logdet.shape == (batch,) and (info == 0).all()
    assert (logdet == 0).all()
    want_psi, _ = icnn_map(x, A, b, W, w, alpha)
    torch.testing.assert_close(psi, want_psi)
    grads = torch.autograd.grad((psi + logdet).sum(), (A, b, W, w, alpha), allow_unused=True)
    want = torch.autograd.grad(reference.icnn_potential(x, A, b, W, w, alpha).sum(), (A, b, W, w, alpha),
                               allow_unused=True)
    for got, exp in zip(grads, want):
        if exp is not None:
            torch.testing.assert_close(got, exp)


@pytest.mark.parametrize("kwargs", [{"check": "no"}, {"check": None}, {"return_info": 1}])
def test_check_and_return_info_must_be_bools(kwargs):
    """Were taken for their truth value ("no" meant check=True)."""
    name = next(iter(kwargs))
    with pytest.raises(TypeError, match=rf"brenier_logdet: {name} must be a bool, got"):
        brenier_map_logdet(*_good(), **kwargs)


def test_argument_that_is_not_a_tensor_is_named():
    """Was AttributeError: 'NoneType' object has no attribute 'requires_grad'."""
    args = _good()
    args[2] = None
    with pytest.raises(TypeError, match=r"brenier_logdet: b must be a torch.Tensor, got NoneType"):
        brenier_logdet(*args)


def test_expanded_x_on_the_reference_path():
    """An expanded x (rows sharing memory) made the reference's vmap(hessian) fail with "more than
    one element of the written-to tensor refers to a single memory location" (not naming the op)."""
    from ivae_ext.ops import use_reference_ops

    x, A, b, W, w, alpha = (t.detach() for t in icnn_inputs(1, 3, 5, 2))
    x = x.expand(4, 3)
    want = brenier_logdet(x.contiguous(), A, b, W, w, alpha)
    with use_reference_ops():
        got = brenier_logdet(x, A, b, W, w, alpha)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(reference.brenier_logdet(x, A, b, W, w, alpha), want)


def test_half_precision_on_the_reference_path_is_named():
    """Was NotImplementedError: "cholesky_cpu" not implemented for 'BFloat16' (the fused CPU op
    refuses half precision with its own message)."""
    from ivae_ext.ops import use_reference_ops

    args = [t.to(torch.bfloat16) for t in _good()]
    with use_reference_ops(), pytest.raises(TypeError, match=r"brenier_logdet: the reference path takes float32 or float64"):
        brenier_logdet(*args)
