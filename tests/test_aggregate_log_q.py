"""ivae_ext.ops.aggregate_log_q: the streamed aggregate posterior against the pairwise reference,
autograd, torch integration, numerical range, errors."""

from __future__ import annotations

import math

import pytest
import torch

import ivae_ext
from ivae_ext import reference
from ivae_ext.ops import aggregate_log_q

from helpers import DEVICES, FAMILIES, call_with_fake_tensors

pytestmark = pytest.mark.skipif(not ivae_ext.HAS_EXTENSION, reason="compiled extension required")

# (B, N, d): N != B both ways, d = 1, one code, several row tasks, several column tasks (small B,
# large N), a batch that is not a multiple of the 4-row groups.
SHAPES = [(7, 5, 3), (5, 9, 3), (9, 4, 1), (1, 1, 1), (300, 70, 6), (3, 2100, 4), (6, 1300, 2)]
OUTPUTS = ["both", "joint", "marginals"]


def inputs(batch, comps, dim, dtype=torch.float64, device="cpu", seed=0, spread=1.0):
    """(z, q_loc, q_log_scale), leaf tensors that require grad."""
    gen = torch.Generator().manual_seed(seed)

    def make(shape, scale):
        return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype=dtype, device=device).requires_grad_()

    return [make((batch, dim), spread), make((comps, dim), spread), make((comps, dim), 0.5)]


def outputs_and_grads(fn, args, family, which="both"):
    """fn's outputs and the gradients of a random projection of the outputs named by `which`."""
    log_qz, log_qm = fn(*args, family)
    gen = torch.Generator().manual_seed(1)
    w_joint = torch.randn(log_qz.shape, generator=gen, dtype=torch.float64).to(log_qz)
    w_marg = torch.randn(log_qm.shape, generator=gen, dtype=torch.float64).to(log_qm)
    loss = 0
    if which in ("both", "joint"):
        loss = loss + (log_qz * w_joint).sum()
    if which in ("both", "marginals"):
        loss = loss + (log_qm * w_marg).sum()
    grads = torch.autograd.grad(loss, args)
    return [log_qz.detach(), log_qm.detach(), *grads]


NAMES = ("log_qz", "log_qz_marginals", "grad z", "grad q_loc", "grad q_log_scale")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", OUTPUTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_reference_float64(family, shape, which, device):
    args = inputs(*shape, device=device)
    fused = outputs_and_grads(aggregate_log_q, args, family, which)
    expected = outputs_and_grads(reference.aggregate_log_q, args, family, which)
    for name, got, want in zip(NAMES, fused, expected):
        assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", FAMILIES)
def test_float32_matches_float64_reference(family, device):
    args = inputs(200, 600, 12, dtype=torch.float32, device=device)
    fused = outputs_and_grads(aggregate_log_q, args, family)
    exact = outputs_and_grads(reference.aggregate_log_q, [t.detach().double().requires_grad_() for t in args], family)
    for name, got, want in zip(NAMES, fused, exact):
        assert got.dtype == torch.float32
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_mixture_of_torch_distributions(family):
    """log q(z) is the log-density of torch's MixtureSameFamily over the N posteriors."""
    torch.manual_seed(3)
    z, loc, log_scale = torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64), 0.3 * torch.randn(4, 3, dtype=torch.float64)
    base = torch.distributions.Normal if family == "gaussian" else torch.distributions.Laplace
    mix = torch.distributions.Categorical(logits=torch.zeros(4, dtype=torch.float64))
    joint = torch.distributions.MixtureSameFamily(mix, torch.distributions.Independent(base(loc, log_scale.exp()), 1))
    log_qz, log_qm = aggregate_log_q(z, loc, log_scale, family)
    torch.testing.assert_close(log_qz, joint.log_prob(z), rtol=1e-12, atol=1e-12)
    for k in range(3):
        marginal = torch.distributions.MixtureSameFamily(mix, base(loc[:, k], log_scale[:, k].exp()))
        torch.testing.assert_close(log_qm[:, k], marginal.log_prob(z[:, k]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", FAMILIES)
def test_far_apart_points_stay_finite(family, dtype):
    """Codes thousands of scales away from every component: each pair's density underflows,
    the mixture's log-density does not (the reference, in float64, is finite too)."""
    z = torch.tensor([[300.0, -200.0], [0.0, 0.0], [-1e3, 5.0]], dtype=dtype, requires_grad=True)
    loc = torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, -50.0]], dtype=dtype, requires_grad=True)
    log_scale = torch.full((3, 2), math.log(0.05), dtype=dtype, requires_grad=True)
    args = [z, loc, log_scale]
    fused = outputs_and_grads(aggregate_log_q, args, family)
    exact = outputs_and_grads(reference.aggregate_log_q, [t.detach().double().requires_grad_() for t in args], family)
    for name, got, want in zip(NAMES, fused, exact):
        assert torch.isfinite(want).all(), f"{name}: the float64 reference should be finite here"
        assert torch.isfinite(got).all(), f"{name}: {got} is not finite where the reference is"
        rtol = 1e-10 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=rtol * want.abs().max().item(), msg=lambda m: f"{name}: {m}")
    assert fused[0][0] < -1e3, "a code far from every component has a very small density"


def test_without_marginals_gives_the_same_joint_and_none():
    z, loc, log_scale = (t.detach() for t in inputs(9, 13, 3))
    joint_only, none = aggregate_log_q(z, loc, log_scale, with_marginals=False)
    both, _ = aggregate_log_q(z, loc, log_scale)
    assert none is None
    assert torch.equal(joint_only, both)


def test_gradient_only_for_inputs_that_require_it():
    z = torch.randn(5, 3, requires_grad=True)
    loc, log_scale = torch.randn(7, 3), torch.randn(7, 3, requires_grad=True)
    log_qz, _ = aggregate_log_q(z, loc, log_scale)
    log_qz.sum().backward()
    assert z.grad is not None and log_scale.grad is not None and loc.grad is None


def test_results_do_not_depend_on_the_thread_count():
    args = inputs(260, 3000, 5, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = outputs_and_grads(aggregate_log_q, args, "gaussian")
        torch.set_num_threads(max(2, threads))
        many = outputs_and_grads(aggregate_log_q, args, "gaussian")
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(NAMES, one, many):
        assert torch.equal(a, b), f"{name}: differs between 1 and {max(2, threads)} threads"


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    z = torch.zeros(0, 3, device=device, requires_grad=True)
    loc = torch.randn(4, 3, device=device, requires_grad=True)
    log_scale = torch.zeros(4, 3, device=device, requires_grad=True)
    log_qz, log_qm = aggregate_log_q(z, loc, log_scale)
    assert log_qz.shape == (0,) and log_qm.shape == (0, 3)
    (log_qz.sum() + log_qm.sum()).backward()
    assert z.grad.shape == (0, 3)
    assert torch.equal(loc.grad, torch.zeros_like(loc)), "no codes: the components' gradient is zero"


def test_zero_dimensions_give_log_one():
    log_qz, log_qm = aggregate_log_q(torch.zeros(3, 0), torch.zeros(5, 0), torch.zeros(5, 0))
    assert torch.equal(log_qz, torch.zeros(3)) and log_qm.shape == (3, 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_nan_in_a_code_stays_in_its_row(family):
    z, loc, log_scale = (t.detach() for t in inputs(6, 9, 3))
    z[2, 1] = float("nan")
    log_qz, log_qm = aggregate_log_q(z, loc, log_scale, family)
    assert torch.isnan(log_qz[2]) and torch.isnan(log_qm[2, 1]), "a NaN input must give NaN, not be dropped"
    assert torch.isfinite(log_qz[[0, 1, 3, 4, 5]]).all() and torch.isfinite(log_qm[2, [0, 2]]).all()


def test_nan_in_a_component_reaches_every_code():
    z, loc, log_scale = (t.detach() for t in inputs(6, 9, 3))
    log_scale[4, 0] = float("nan")
    log_qz, log_qm = aggregate_log_q(z, loc, log_scale)
    assert torch.isnan(log_qz).all() and torch.isnan(log_qm[:, 0]).all()
    assert torch.isfinite(log_qm[:, 1:]).all()


# --- autograd, opcheck, compile, export ---------------------------------------------------------


@pytest.mark.parametrize("which", OUTPUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck(family, which):
    args = inputs(5, 4, 3, seed=2)

    def fn(*t):
        log_qz, log_qm = aggregate_log_q(*t, family)
        return {"both": (log_qz, log_qm), "joint": log_qz, "marginals": log_qm}[which]

    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_without_marginals(family):
    args = inputs(5, 4, 3, seed=4)
    assert torch.autograd.gradcheck(lambda *t: aggregate_log_q(*t, family, with_marginals=False)[0], args)


def test_double_backward_is_a_clear_error():
    z, loc, log_scale = inputs(4, 3, 2)
    (grad,) = torch.autograd.grad(aggregate_log_q(z, loc, log_scale)[0].sum(), z, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        grad.sum().backward()


@pytest.mark.parametrize("with_marginals", [True, False])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_opcheck(family, requires_grad, with_marginals):
    args = [t.detach().float().requires_grad_(requires_grad) for t in inputs(6, 5, 3)]
    torch.library.opcheck(torch.ops.ivae_ext.aggregate_log_q.default, (*args, family, with_marginals))


@pytest.mark.parametrize("grads", ["both", "joint", "marginals"])
@pytest.mark.parametrize("mask", [[True, True, True], [False, True, False]])
def test_opcheck_backward(mask, grads):
    z, loc, log_scale = (t.detach() for t in inputs(6, 5, 3))
    log_qz, log_qm = reference.aggregate_log_q(z, loc, log_scale)
    g_joint = torch.randn(6, dtype=torch.float64) if grads != "marginals" else None
    g_marg = torch.randn(6, 3, dtype=torch.float64) if grads != "joint" else None
    torch.library.opcheck(
        torch.ops.ivae_ext.aggregate_log_q_backward.default,
        (g_joint, g_marg, z, loc, log_scale, log_qz, log_qm, "gaussian", mask),
    )


def _total_correlation(z, loc, log_scale):
    log_qz, log_qm = aggregate_log_q(z, loc, log_scale)
    return (log_qz - log_qm.sum(-1)).mean()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    compiled = torch.compile(_total_correlation, fullgraph=True, backend=backend)
    args = inputs(8, 6, 3)
    eager = [_total_correlation(*args), *torch.autograd.grad(_total_correlation(*args), args)]
    out = compiled(*args)
    got = [out, *torch.autograd.grad(out, args)]
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b)


def test_torch_export():
    class TotalCorrelation(torch.nn.Module):
        def forward(self, z, loc, log_scale):
            return _total_correlation(z, loc, log_scale)

    args = tuple(t.detach() for t in inputs(8, 6, 3))
    exported = torch.export.export(TotalCorrelation(), args)
    assert "ivae_ext.aggregate_log_q" in str(exported.graph), "the fused op must stay one node in the graph"
    torch.testing.assert_close(exported.module()(*args), TotalCorrelation()(*args))


# --- errors a user gets -----------------------------------------------------------------------


def _good():
    return [torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, 3)]


@pytest.mark.parametrize("backend", ["kernel", "fake"])
@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda a: a.__setitem__(0, torch.randn(12)), ValueError, r"z must have shape \[B, d\], got \[12\]"),
        (lambda a: a.__setitem__(1, torch.randn(5, 2)), ValueError, r"q_loc must have shape \[N, d\] with z's d = 3, got \[5, 2\]"),
        (lambda a: a.__setitem__(2, torch.randn(4, 3)), ValueError, r"q_log_scale must have q_loc's shape \[5, 3\], got \[4, 3\]"),
        (lambda a: (a.__setitem__(1, torch.randn(0, 3)), a.__setitem__(2, torch.randn(0, 3))), ValueError,
         r"q_loc must hold at least one posterior \(N >= 1\): the mixture is empty"),
        (lambda a: a.__setitem__(1, torch.randn(5, 3, dtype=torch.float64)), TypeError, r"z and q_loc must have the same dtype"),
        (lambda a: a.__setitem__(0, torch.randn(4, 3).half()), TypeError, r"z must be float32 or float64, got dtype"),
        (lambda a: a.__setitem__(2, torch.ones(5, 3, dtype=torch.int64)), TypeError, r"q_log_scale must be .*float"),
    ],
)
def test_bad_arguments_are_named(change, error, message, backend):
    args = _good()
    change(args)
    call = (lambda: call_with_fake_tensors(torch.ops.ivae_ext.aggregate_log_q, args, "gaussian", True)) if backend == "fake" else (lambda: aggregate_log_q(*args))
    with pytest.raises(error, match=message):
        call()


def test_unknown_family():
    with pytest.raises(ValueError, match=r"family must be one of \('gaussian', 'laplace'\), got 'poisson'"):
        aggregate_log_q(*_good(), family="poisson")


def test_mixed_devices_are_named():
    args = _good()
    args[2] = torch.randn(5, 3, device="meta")
    with pytest.raises(ValueError, match=r"z and q_log_scale must be on the same device, got cpu and meta"):
        aggregate_log_q(*args)


def test_wrong_upstream_gradient_shape():
    z, loc, log_scale = _good()
    log_qz, log_qm = aggregate_log_q(z, loc, log_scale)
    with pytest.raises(ValueError, match=r"grad_log_qz_marginals must have shape \[4, 3\], got \[4\]"):
        torch.ops.ivae_ext.aggregate_log_q_backward(None, torch.randn(4), z, loc, log_scale, log_qz, log_qm, "gaussian", [True] * 3)


def test_benchmark_baseline_computes_the_same_quantity():
    """The plain formula the benchmarks compile (what a user would write) is the op's quantity."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
    from aggregate_log_q_cases import plain_gaussian_formula

    z, loc, log_scale = (t.detach() for t in inputs(7, 9, 4))
    for got, want in zip(plain_gaussian_formula(z, loc, log_scale), aggregate_log_q(z, loc, log_scale)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# --- found by the hostile-input fuzzer (tests/fuzz_ops.py) --------------------------------------


@pytest.mark.parametrize("value", [None, 1, "yes"])
def test_with_marginals_must_be_a_bool(value):
    """Was taken for its truth value (None meant False, "yes" True)."""
    with pytest.raises(TypeError, match=r"aggregate_log_q: with_marginals must be a bool, got"):
        aggregate_log_q(*_good(), with_marginals=value)


def test_family_or_tensor_of_the_wrong_type_is_named():
    """Were a pybind11 cast error and the dispatcher's "tensor does not have a device"."""
    with pytest.raises(ValueError, match=r"aggregate_log_q: family must be one of .*got None"):
        aggregate_log_q(*_good(), family=None)
    args = _good()
    args[1] = None
    with pytest.raises(TypeError, match=r"aggregate_log_q: q_loc must be a torch.Tensor, got NoneType"):
        aggregate_log_q(*args)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype, far", [(torch.float32, 1e30), (torch.float64, 1e300)])
def test_component_with_zero_weight_adds_no_nan_to_the_gradients(family, dtype, far):
    """A component so far from the code that its softmax weight is 0 and its derivative
    (z - loc)/σ² or (z - loc)²/σ² overflows: its share is 0, not 0·inf = NaN (all gradients were
    NaN, in float32 and in float64, while the outputs were finite)."""
    z = torch.tensor([[0.1, -0.2]], dtype=dtype, requires_grad=True)
    q_loc = torch.tensor([[0.0, 0.0], [far, 1.0]], dtype=dtype, requires_grad=True)
    q_log_scale = torch.tensor([[0.1, -0.3], [0.0, 0.2]], dtype=dtype, requires_grad=True)
    log_qz, marginals = aggregate_log_q(z, q_loc, q_log_scale, family)
    grads = torch.autograd.grad(log_qz.sum() + marginals.sum(), (z, q_loc, q_log_scale))
    exact = [t.detach().double().requires_grad_() for t in (z, q_loc, q_log_scale)]
    want_qz, want_m = reference.aggregate_log_q(*exact, family)
    want = torch.autograd.grad(want_qz.sum() + want_m.sum(), exact)
    for got, expected in zip(grads, want):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
