"""ivae_ext.ops.imq_mmd: the streamed MMD² against the [n, m, D] reference, autograd, torch
integration, statistical sanity, numerical policy, errors."""

from __future__ import annotations

import pytest
import torch

import ivae_ext
from ivae_ext import reference
from ivae_ext.ops import imq_mmd, use_reference_ops

from helpers import DEVICES, call_with_fake_tensors

pytestmark = pytest.mark.skipif(not ivae_ext.HAS_EXTENSION, reason="compiled extension required")

# (n, m, D): n != m both ways, D = 1, the smallest samples (2), and sizes on both sides of the
# CPU tile edges (per_dim 128 rows, joint 64) and of the x/y boundary inside a tile.
SHAPES = [(2, 2, 1), (5, 3, 4), (3, 7, 2), (9, 9, 1), (63, 64, 3), (64, 65, 2), (65, 63, 5), (130, 2, 3),
          (2, 130, 2), (129, 131, 1)]
SCALES = [(0.2, 0.4, 1.0, 2.0, 4.0, 10.0), (1.0,), (0.05, 3.0, 700.0)]


def samples(n, m, dim, dtype=torch.float64, device="cpu", seed=0, shift=0.3):
    """(x, y), leaf tensors that require grad; y slightly shifted and scaled so MMD² is not ~0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    y = 1.3 * torch.randn(m, dim, generator=gen, dtype=torch.float64) + shift
    return [t.to(dtype=dtype, device=device).requires_grad_() for t in (x, y)]


def value_and_grads(fn, args, *rest):
    out = fn(*args, *rest)
    return [out.detach(), *torch.autograd.grad(out, args)]


NAMES = ("mmd", "grad x", "grad y")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}-m{}-D{}".format(*s))
def test_matches_reference_float64(shape, per_dim, device):
    args = samples(*shape, device=device)
    fused = value_and_grads(imq_mmd, args, reference.IMQ_SCALES, per_dim)
    expected = value_and_grads(reference.imq_mmd, args, reference.IMQ_SCALES, per_dim)
    for name, got, want in zip(NAMES, fused, expected):
        assert got.shape == want.shape and got.dtype == want.dtype, f"{name}: {got.shape}/{got.dtype}"
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("scales", SCALES, ids=["anchor", "one", "wide"])
@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
def test_other_scales_match_reference(per_dim, scales):
    args = samples(40, 33, 3, seed=5)
    fused = value_and_grads(imq_mmd, args, scales, per_dim)
    expected = value_and_grads(reference.imq_mmd, args, scales, per_dim)
    for name, got, want in zip(NAMES, fused, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_scales_as_a_tensor_or_a_list_give_the_same_result():
    x, y = (t.detach() for t in samples(10, 12, 3))
    want = imq_mmd(x, y, (0.5, 2.0))
    assert torch.equal(imq_mmd(x, y, [0.5, 2.0]), want)
    assert torch.equal(imq_mmd(x, y, torch.tensor([0.5, 2.0], dtype=torch.float64)), want)
    assert torch.equal(imq_mmd(x, y), imq_mmd(x, y, reference.IMQ_SCALES)), "the default is the anchor's scales"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
def test_float32_matches_float64_reference(per_dim, device):
    """float32 inputs: pair values in float, sums in double; compared with the exact (float64)
    reference on the same numbers, relative to each output's scale."""
    args = samples(300, 270, 16, dtype=torch.float32, device=device, shift=0.1)
    fused = value_and_grads(imq_mmd, args, reference.IMQ_SCALES, per_dim)
    exact = value_and_grads(reference.imq_mmd, [t.detach().double().requires_grad_() for t in args],
                            reference.IMQ_SCALES, per_dim)
    for name, got, want in zip(NAMES, fused, exact):
        assert got.dtype == torch.float32
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{name}: {m}")


def test_float32_value_is_accurate_at_the_benchmark_size():
    """B = 500, D = 50: 25M pair-dimensions summed; the MMD² (a small difference of sums of
    about 17.6 per pair) keeps 5 significant digits."""
    x, y = (t.detach() for t in samples(500, 500, 50, dtype=torch.float32, shift=0.2))
    got = imq_mmd(x, y).double()
    # per_dim is a sum over dimensions: the float64 reference by chunks of 10 keeps its memory small
    want = sum(reference.imq_mmd(x[:, d:d + 10].double(), y[:, d:d + 10].double()) for d in range(0, 50, 10))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
def test_symmetric_in_x_and_y(per_dim):
    x, y = (t.detach() for t in samples(17, 23, 3))
    torch.testing.assert_close(imq_mmd(x, y, per_dim=per_dim), imq_mmd(y, x, per_dim=per_dim), rtol=1e-13, atol=1e-15)


def test_per_dim_is_the_sum_of_one_dimensional_mmds():
    x, y = (t.detach() for t in samples(20, 25, 4))
    one_d = sum(imq_mmd(x[:, d:d + 1], y[:, d:d + 1], per_dim=False) for d in range(4))
    torch.testing.assert_close(imq_mmd(x, y, per_dim=True), one_d, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
def test_same_distribution_is_zero_in_expectation_different_is_positive(per_dim):
    """Unbiased: over many draws from one distribution the mean is ~0 (within its standard
    error); a shifted distribution gives a clearly positive value on every draw."""
    gen = torch.Generator().manual_seed(11)
    same, shifted = [], []
    for _ in range(60):
        x, y = torch.randn(60, 3, generator=gen, dtype=torch.float64), torch.randn(50, 3, generator=gen, dtype=torch.float64)
        same.append(imq_mmd(x, y, per_dim=per_dim))
        shifted.append(imq_mmd(x, y + 1.0, per_dim=per_dim))
    same, shifted = torch.stack(same), torch.stack(shifted)
    stderr = same.std() / len(same) ** 0.5
    assert same.mean().abs() < 3 * stderr, f"mean {same.mean():.3g} vs standard error {stderr:.3g}"
    assert (same < 0).any(), "the unbiased estimator is negative on some draws of equal distributions"
    assert shifted.min() > 2 * same.abs().max(), "a shift by one standard deviation must stand out on every draw"


def test_one_sample_against_itself_is_negative_not_zero():
    """MMD²(x, x) = 2 mean_{i≠j} k_ij - 2 mean_{i,j} k_ij < 0: the cross term keeps the diagonal
    pairs (k = Σ C each, the kernel's maximum)."""
    x = samples(12, 2, 2)[0].detach()
    got = imq_mmd(x, x)
    torch.testing.assert_close(got, reference.imq_mmd(x, x), rtol=1e-12, atol=1e-14)
    assert got < 0


def test_zero_dimensions_give_zero():
    x, y = torch.zeros(3, 0, requires_grad=True), torch.zeros(4, 0, requires_grad=True)
    for per_dim in (True, False):
        out = imq_mmd(x, y, per_dim=per_dim)
        assert out.item() == 0.0
        gx, gy = torch.autograd.grad(out, (x, y))
        assert gx.shape == (3, 0) and gy.shape == (4, 0)


def test_results_do_not_depend_on_the_thread_count():
    args = samples(300, 200, 6, dtype=torch.float32)
    threads = torch.get_num_threads()
    for per_dim in (True, False):
        try:
            torch.set_num_threads(1)
            one = value_and_grads(imq_mmd, args, reference.IMQ_SCALES, per_dim)
            torch.set_num_threads(max(2, threads))
            many = value_and_grads(imq_mmd, args, reference.IMQ_SCALES, per_dim)
        finally:
            torch.set_num_threads(threads)
        for name, a, b in zip(NAMES, one, many):
            assert torch.equal(a, b), f"{name} (per_dim={per_dim}): differs between 1 and {max(2, threads)} threads"


def test_far_apart_and_coincident_points():
    """Coincident points (r = 0) and points 1e6 apart (k ~ 1e-11): finite, as the reference."""
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1e6, -1e6]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [3.0, 2.0], [-1e6, 0.5]], dtype=torch.float64, requires_grad=True)
    for per_dim in (True, False):
        fused = value_and_grads(imq_mmd, [x, y], reference.IMQ_SCALES, per_dim)
        want = value_and_grads(reference.imq_mmd, [x, y], reference.IMQ_SCALES, per_dim)
        for name, got, exp in zip(NAMES, fused, want):
            assert torch.isfinite(got).all(), name
            torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-15, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
def test_nan_input_gives_nan(per_dim):
    """The policy: NaN in, NaN out (not an error), value and the gradients it reaches."""
    x, y = samples(6, 5, 3)
    with torch.no_grad():
        x[2, 1] = float("nan")
    out = imq_mmd(x, y, per_dim=per_dim)
    assert torch.isnan(out), "a NaN input must give NaN, not be dropped"
    gx, gy = torch.autograd.grad(out, (x, y))
    assert torch.isnan(gx[:, 1]).all() and torch.isnan(gy[:, 1]).all()
    if per_dim:
        assert torch.isfinite(gx[:, [0, 2]]).all() and torch.isfinite(gy[:, [0, 2]]).all(), "other columns stay finite"


# --- autograd, opcheck, compile, export ---------------------------------------------------------


@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
def test_gradcheck(per_dim):
    args = samples(5, 4, 3, seed=2)
    assert torch.autograd.gradcheck(lambda x, y: imq_mmd(x, y, (0.3, 2.0), per_dim), args)


@pytest.mark.parametrize("which", ["x", "y"])
def test_gradient_only_for_inputs_that_require_it(which):
    x, y = (t.detach() for t in samples(7, 6, 2))
    (x if which == "x" else y).requires_grad_()
    out = imq_mmd(x, y)
    out.backward()
    assert (x.grad is not None) == (which == "x") and (y.grad is not None) == (which == "y")
    want = torch.autograd.grad(reference.imq_mmd(x, y), x if which == "x" else y)[0]
    torch.testing.assert_close(x.grad if which == "x" else y.grad, want, rtol=1e-10, atol=1e-12)


def test_upstream_gradient_scales_the_gradients():
    x, y = samples(8, 9, 2)
    gx, gy = torch.autograd.grad(3.5 * imq_mmd(x, y), (x, y))
    rx, ry = torch.autograd.grad(3.5 * reference.imq_mmd(x, y), (x, y))
    torch.testing.assert_close(gx, rx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gy, ry, rtol=1e-10, atol=1e-12)


def test_no_gradient_work_without_grad_mode():
    x, y = samples(6, 5, 2)
    with torch.no_grad():
        out = imq_mmd(x, y)
    assert not out.requires_grad
    _, gx, gy = torch.ops.ivae_ext.imq_mmd.default(x.detach(), y.detach(), list(reference.IMQ_SCALES), True,
                                                   [False, False])
    assert gx.numel() == 0 and gy.numel() == 0, "gradients not asked for are not computed"


def test_double_backward_is_a_clear_error():
    x, y = samples(4, 3, 2)
    (grad,) = torch.autograd.grad(imq_mmd(x, y), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        grad.sum().backward()


def test_gradient_penalty_through_the_op_is_refused_not_dropped():
    """A loss with a term in dMMD²/dx must not silently lose that term's gradient."""
    x, y = samples(4, 3, 2)
    (grad,) = torch.autograd.grad(imq_mmd(x, y), x, create_graph=True)
    loss = imq_mmd(x, y) + (grad ** 2).sum()
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        loss.backward()


def test_op_called_without_the_gradient_it_needs():
    x, y = samples(4, 3, 2)
    out, _, _ = torch.ops.ivae_ext.imq_mmd(x, y, [1.0], True, [False, True])
    with pytest.raises(RuntimeError, match=r"output_mask\[0\] = False, so no gradient for x"):
        out.backward()


@pytest.mark.parametrize("per_dim", [True, False])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, per_dim):
    x, y = (t.detach().float().requires_grad_(requires_grad) for t in samples(6, 5, 3))
    mask = [requires_grad, requires_grad]
    torch.library.opcheck(torch.ops.ivae_ext.imq_mmd.default, (x, y, [0.5, 2.0], per_dim, mask))


def test_opcheck_backward():
    x, y = (t.detach() for t in samples(6, 5, 3))
    gx, gy = torch.randn(6, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    grad = torch.tensor(0.7, dtype=torch.float64)
    for mask in ([True, True], [False, True]):
        torch.library.opcheck(torch.ops.ivae_ext.imq_mmd_backward.default, (grad, x, y, gx, gy, mask))


def _regulariser(x, y):
    return imq_mmd(x, y) + 0.5 * imq_mmd(x, y, (1.0, 4.0), per_dim=False)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    compiled = torch.compile(_regulariser, fullgraph=True, backend=backend)
    args = samples(9, 7, 3)
    eager = value_and_grads(_regulariser, args)
    got = value_and_grads(compiled, args)
    for name, a, b in zip(NAMES, got, eager):
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")


def test_torch_compile_under_no_grad():
    torch._dynamo.reset()
    compiled = torch.compile(_regulariser, fullgraph=True, backend="aot_eager")
    x, y = (t.detach() for t in samples(9, 7, 3))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, y), _regulariser(x, y))


def test_torch_export():
    class Regulariser(torch.nn.Module):
        def forward(self, x, y):
            return _regulariser(x, y)

    args = tuple(t.detach() for t in samples(8, 6, 3))
    exported = torch.export.export(Regulariser(), args)
    assert "ivae_ext.imq_mmd" in str(exported.graph), "the fused op must stay one node in the graph"
    torch.testing.assert_close(exported.module()(*args), Regulariser()(*args))


# --- the reference switch -----------------------------------------------------------------------


def test_reference_ops_switch_runs_the_reference():
    args = samples(10, 8, 3)
    with use_reference_ops():
        inside = value_and_grads(imq_mmd, args)
    want = value_and_grads(reference.imq_mmd, args)
    for name, got, exp in zip(NAMES, inside, want):
        assert torch.equal(got, exp), f"{name}: the switch must give the reference bit for bit"
    fused = value_and_grads(imq_mmd, args)
    for name, got, exp in zip(NAMES, fused, want):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


# --- errors a user gets -----------------------------------------------------------------------


def _good():
    return [torch.randn(4, 3), torch.randn(5, 3)]


BAD = [
    (lambda a: a.__setitem__(0, torch.randn(12)), ValueError, r"x must have shape \[n, D\], got \[12\]"),
    (lambda a: a.__setitem__(1, torch.randn(5, 2)), ValueError, r"y must have shape \[m, D\] with x's D = 3, got \[5, 2\]"),
    (lambda a: a.__setitem__(0, torch.randn(1, 3)), ValueError,
     r"x must hold at least two samples \(n >= 2\) for the unbiased estimator, got shape \[1, 3\]"),
    (lambda a: a.__setitem__(1, torch.randn(1, 3)), ValueError, r"y must hold at least two samples \(m >= 2\)"),
    (lambda a: a.__setitem__(1, torch.randn(5, 3, dtype=torch.float64)), TypeError, r"x and y must have the same dtype"),
    (lambda a: a.__setitem__(0, torch.randn(4, 3).half()), TypeError, r"x must be float32 or float64, got dtype"),
    (lambda a: a.__setitem__(1, torch.ones(5, 3, dtype=torch.int64)), TypeError, r"y must be float32 or float64, got dtype"),
]


@pytest.mark.parametrize("backend", ["kernel", "fake", "reference"])
@pytest.mark.parametrize("change, error, message", BAD)
def test_bad_arguments_are_named(change, error, message, backend):
    args = _good()
    change(args)
    if backend == "fake":
        def call():
            return call_with_fake_tensors(torch.ops.ivae_ext.imq_mmd, args, [1.0], True, [False, False])
    elif backend == "reference":
        def call():
            with use_reference_ops():
                return imq_mmd(*args)
    else:
        def call():
            return imq_mmd(*args)
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    "scales, error, message",
    [
        ((), ValueError, r"scales must hold at least one kernel scale, got none"),
        ((1.0, -2.0), ValueError, r"scales must be positive and finite, got scales\[1\] = -2"),
        ((0.0,), ValueError, r"scales must be positive and finite, got scales\[0\] = 0"),
        ((float("inf"),), ValueError, r"scales must be positive and finite"),
        ((float("nan"),), ValueError, r"scales must be positive and finite"),
        ("abc", TypeError, r"scales must be a sequence of floats or a 1-D tensor, got str"),
        (2.0, TypeError, r"scales must be a sequence of floats or a 1-D tensor, got float"),
        (torch.ones(2, 2), ValueError, r"scales must be a 1-D floating-point tensor"),
        (torch.ones(2, requires_grad=True), ValueError, r"scales must not require grad"),
        ((1e-40,), ValueError, r"scales must lie in \[1e-30, 1e30\] for float32 inputs"),
    ],
)
def test_bad_scales(scales, error, message):
    with pytest.raises(error, match=message):
        imq_mmd(*_good(), scales)


def test_bad_scales_reach_the_kernel_checks_too():
    """Called directly (no wrapper), the C++ checks say the same."""
    with pytest.raises(ValueError, match=r"scales must be positive and finite, got scales\[1\] = -2"):
        torch.ops.ivae_ext.imq_mmd(*_good(), [1.0, -2.0], True, [False, False])
    with pytest.raises(ValueError, match=r"scales must hold at least one kernel scale"):
        torch.ops.ivae_ext.imq_mmd(*_good(), [], True, [False, False])


# The CPU loops share one division between two scales when the scales allow it (float32: all in
# [1e-12, 1e4], float64: [1e-100, 1e50]) and divide per scale otherwise: both paths, odd and even counts.
EVALUATOR_CASES = [
    (torch.float64, (0.2, 0.4, 1.0, 2.0, 4.0, 10.0)),  # paired
    (torch.float64, (0.3, 2.0, 9.0)),                  # paired, one left over
    (torch.float64, (1e-120, 1.0, 5.0)),               # per scale (1e-120 is below the paired range)
    (torch.float32, (0.2, 0.4, 1.0, 2.0, 4.0, 10.0)),  # paired
    (torch.float32, (1.0, 3e5)),                       # per scale (3e5 is above the float32 paired range)
]


@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
@pytest.mark.parametrize("dtype, scales", EVALUATOR_CASES, ids=lambda v: str(v))
def test_both_kernel_evaluators_match_reference(dtype, scales, per_dim):
    args = samples(70, 66, 3, dtype=dtype, seed=9)
    fused = value_and_grads(imq_mmd, args, scales, per_dim)
    exact = value_and_grads(reference.imq_mmd, [t.detach().double().requires_grad_() for t in args], scales, per_dim)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for name, got, want in zip(NAMES, fused, exact):
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * scale, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("per_dim", [True, False], ids=["per_dim", "joint"])
def test_float32_points_beyond_the_paired_range(per_dim):
    """float32 pairs more than 3e7 apart (r > 1e15) count as 0 in the paired evaluator: their
    kernel is below 1e-14; the rest of the sum is unaffected."""
    x = torch.tensor([[0.0], [0.5], [1e9]], requires_grad=True)
    y = torch.tensor([[0.2], [-1e8], [0.7]], requires_grad=True)
    fused = value_and_grads(imq_mmd, [x, y], reference.IMQ_SCALES, per_dim)
    exact = value_and_grads(reference.imq_mmd, [x.detach().double().requires_grad_(), y.detach().double().requires_grad_()],
                            reference.IMQ_SCALES, per_dim)
    for name, got, want in zip(NAMES, fused, exact):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6 * want.abs().max().item(),
                                   msg=lambda m: f"{name}: {m}")


def test_mixed_devices_are_named():
    with pytest.raises(ValueError, match=r"x and y must be on the same device, got cpu and meta"):
        imq_mmd(torch.randn(4, 3), torch.randn(5, 3, device="meta"))


def test_benchmark_baseline_computes_the_same_quantity():
    """The anchor-style formula the benchmarks compile (what a user writes) is the op's quantity."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
    from imq_mmd_cases import anchor_mmd_dim

    x, y = (t.detach() for t in samples(9, 9, 4))
    torch.testing.assert_close(anchor_mmd_dim(x, y), imq_mmd(x, y), rtol=1e-12, atol=1e-14)


# --- found by the hostile-input fuzzer (tests/fuzz_ops.py) --------------------------------------


@pytest.mark.parametrize("scales", [(True,), [1.0, "2"]], ids=["bool", "str"])
def test_scales_of_bools_or_strings_are_refused(scales):
    """float(True) == 1.0 and float("2") == 2.0 were accepted silently."""
    with pytest.raises(TypeError, match=r"imq_mmd: scales must be a sequence of floats"):
        imq_mmd(*_good(), scales)
