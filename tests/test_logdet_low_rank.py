"""brenier_logdet's low-rank form (ops/brenier_logdet.h): when 2*K*H <= d, α > 0 and W, w >= 0
the op works with the K*H x K*H capacitance matrix αI + C½ J Jᵀ C½ instead of the d x d Hessian.
Checked against the reference (vmap(hessian) + slogdet) in float64, against the d x d form
(IVAE_LOGDET_FORM=full), by gradcheck and opcheck, and on which form a call took (minv's
content)."""

from __future__ import annotations

import pytest
import torch

from ivae_ext import reference
from ivae_ext.ops import brenier_logdet, brenier_map_logdet
from ivae_ext.ops.brenier_logdet import HAS_FUSED_LOGDET

from helpers import DEVICES, icnn_inputs
from test_brenier_logdet import NAMES, assert_all_close, reference_all, weighted_grads

pytestmark = pytest.mark.skipif(not HAS_FUSED_LOGDET, reason="compiled op required")

# (B, d, H, K) with 2*K*H <= d: rank 4 of 8 (K = 2), rank 5 of 12 (K = 1), 70 rows of rank 3 (several
# SIMD lane groups and a tail), rank 16 of 40, and d = 2 with a single unit.
SHAPES = [(9, 8, 2, 2), (13, 12, 5, 1), (70, 9, 1, 3), (5, 40, 8, 2), (6, 2, 1, 1)]
SHAPE_ID = "B{}-d{}-H{}-K{}".format
CPU_PATHS = ["tiles", "aten"]  # aten: the ATen calls CUDA makes (low_rank_logdet / low_rank_adjoint)


def op_outputs(inputs, keep=True):
    """The raw op's seven outputs (psi, grad, logdet, info, saved, jac, minv), no autograd."""
    return torch.ops.ivae_ext.brenier_logdet.default(*[t.detach() for t in inputs], keep)


@pytest.mark.parametrize("path", CPU_PATHS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: SHAPE_ID(*s))
def test_outputs_and_gradients_match_reference_float64(shape, device, path, monkeypatch):
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", path)
    inputs = icnn_inputs(*shape, device=device)
    got = brenier_map_logdet(*inputs)
    want = reference_all(*inputs)
    assert_all_close(got, want, ("psi", "grad", "logdet"), 1e-10, 1e-10)
    assert_all_close(weighted_grads(got, inputs), weighted_grads(want, inputs), NAMES, 1e-9, 1e-9)
    logdet_grads = weighted_grads([brenier_logdet(*inputs)], inputs)  # through the log det alone
    assert_all_close(logdet_grads, weighted_grads([reference.brenier_logdet(*inputs)], inputs), NAMES, 1e-9, 1e-9)


@pytest.mark.parametrize("path", CPU_PATHS)
@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: SHAPE_ID(*s))
def test_low_rank_form_is_taken_and_minv_holds_the_capacitance_inverse(shape, path, monkeypatch):
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", path)
    inputs = icnn_inputs(*shape)
    d, r = shape[1], shape[2] * shape[3]
    minv = op_outputs(inputs)[6]
    assert torch.count_nonzero(minv[:, r:, :]) == 0 and torch.count_nonzero(minv[:, :, r:]) == 0
    # tr Hess⁻¹ = (d − r)/α + tr Cap⁻¹, and Cap⁻¹ is symmetric positive definite.
    cap_inverse = minv[:, :r, :r]
    alpha = inputs[5].item()
    hess = reference.icnn_hessian(*[t.detach() for t in inputs])
    want_trace = torch.linalg.inv(hess).diagonal(0, 1, 2).sum(-1)
    got_trace = cap_inverse.diagonal(0, 1, 2).sum(-1) + (d - r) / alpha
    torch.testing.assert_close(got_trace, want_trace, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cap_inverse, cap_inverse.transpose(1, 2), rtol=1e-12, atol=1e-12)
    assert (torch.linalg.eigvalsh(cap_inverse) > 0).all()


def test_full_form_by_environment_gives_the_hessian_inverse_and_the_same_results(monkeypatch):
    inputs = icnn_inputs(30, 12, 3, 2)
    low_rank = brenier_map_logdet(*inputs)
    low_rank_grads = weighted_grads(low_rank, inputs)
    monkeypatch.setenv("IVAE_LOGDET_FORM", "full")
    full = brenier_map_logdet(*inputs)
    hess = reference.icnn_hessian(*[t.detach() for t in inputs])
    torch.testing.assert_close(op_outputs(inputs)[6], torch.linalg.inv(hess), rtol=1e-9, atol=1e-9)
    assert_all_close(low_rank, full, ("psi", "grad", "logdet"), 1e-11, 1e-11)
    assert_all_close(low_rank_grads, weighted_grads(full, inputs), NAMES, 1e-10, 1e-10)


@pytest.mark.parametrize(
    "case", ["negative W", "negative w", "2KH > d"],
)
def test_d_by_d_form_where_the_low_rank_form_does_not_apply(case):
    shape = (8, 9, 5, 1) if case == "2KH > d" else (8, 10, 2, 2)
    inputs = icnn_inputs(*shape)
    with torch.no_grad():
        if case == "negative W":
            inputs[3][0, 0, 1] = -0.01
        elif case == "negative w":
            inputs[4][0] = -0.01
    hess = reference.icnn_hessian(*[t.detach() for t in inputs])
    torch.testing.assert_close(op_outputs(inputs)[6], torch.linalg.inv(hess), rtol=1e-9, atol=1e-9)
    got = brenier_logdet(*inputs)
    want = reference.brenier_logdet(*inputs)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert_all_close(weighted_grads([got], inputs), weighted_grads([want], inputs), NAMES, 1e-9, 1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_matches_float64_reference(device):
    inputs = icnn_inputs(64, 48, 6, 2, dtype=torch.float32, device=device)
    wide = [t.detach().double().requires_grad_() for t in inputs]
    got = brenier_logdet(*inputs)
    want = reference.brenier_logdet(*wide)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    for name, g, w in zip(NAMES, weighted_grads([got], inputs), weighted_grads([want], wide)):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("path", CPU_PATHS)
@pytest.mark.parametrize("shape", [(3, 6, 1, 2), (2, 4, 2, 1), (3, 5, 2, 1)], ids=lambda s: SHAPE_ID(*s))
def test_gradcheck(shape, path, monkeypatch):
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", path)
    inputs = icnn_inputs(*shape)
    with torch.no_grad():  # weights away from 0: a finite-difference step keeps them >= 0 (same form)
        inputs[3].add_(0.1)
        inputs[4].add_(0.1)
    assert torch.autograd.gradcheck(lambda *t: brenier_map_logdet(*t), inputs)


@pytest.mark.parametrize("path", CPU_PATHS)
def test_nan_input_gives_nan_and_status_minus_one_not_an_error(path, monkeypatch):
    monkeypatch.setenv("IVAE_ICNN_CPU_PATH", path)
    x, A, b, W, w, alpha = (t.detach() for t in icnn_inputs(4, 8, 2, 2))
    x[2, 5] = float("nan")
    logdet, info = brenier_logdet(x, A, b, W, w, alpha, return_info=True)
    assert info.tolist() == [0, 0, -1, 0]
    assert torch.isnan(logdet[2]) and torch.isfinite(logdet[[0, 1, 3]]).all()


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, keep):
    inputs = [t.detach().requires_grad_(requires_grad) for t in icnn_inputs(5, 8, 2, 2)]
    torch.library.opcheck(torch.ops.ivae_ext.brenier_logdet.default, (*inputs, keep))


def test_opcheck_backward():
    inputs = [t.detach() for t in icnn_inputs(5, 8, 2, 2)]
    out = torch.ops.ivae_ext.brenier_logdet(*inputs, True)
    args = (torch.randn(5, dtype=torch.float64), *inputs, out[4], out[5], out[6], [True, True, True, True, True, True])
    torch.library.opcheck(torch.ops.ivae_ext.brenier_logdet_backward.default, args)


def test_unknown_form_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("IVAE_LOGDET_FORM", "woodbury")
    with pytest.raises(ValueError, match="IVAE_LOGDET_FORM must be 'auto' or 'full', got 'woodbury'"):
        brenier_logdet(*icnn_inputs(3, 8, 2, 2))
