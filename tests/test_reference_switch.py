"""ivae_ext.ops.use_reference_ops: inside the switch every op wrapper is its ivae_ext.reference
oracle bit for bit, with the fused op's contract (checks, outputs, status policy, autograd
metadata); outside it the fused kernels run. Models give the same loss and gradients either way.
Nesting, exceptions, decorator use, threads, torch.compile."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ivae_ext
from ivae_ext import reference
from ivae_ext.models import IVAE, VAE, ConvexPotentialFlow
from ivae_ext.nn import BrenierMap
from ivae_ext.ops import (
    aggregate_log_q, brenier_logdet, brenier_map_logdet, expfam_kl, icnn_map, imq_mmd, reference_ops_enabled,
    use_reference_ops,
)
from ivae_ext.ops.brenier_logdet import HAS_FUSED_LOGDET
from ivae_ext.ops.icnn_map import HAS_FUSED_ICNN

from helpers import icnn_inputs, kl_inputs

pytestmark = pytest.mark.skipif(not (HAS_FUSED_ICNN and HAS_FUSED_LOGDET), reason="compiled ops required")

F64 = torch.float64


class RecordOps(TorchDispatchMode):
    """Records the name of every op dispatched (forward and backward) while active."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))

    def fused(self) -> set:
        return {name for name in self.names if name.startswith("ivae_ext.")}


def random_projection_grads(outputs, inputs, seed=1):
    """Gradients of a random projection of every floating-point output w.r.t. every input."""
    gen = torch.Generator().manual_seed(seed)
    used = [o for o in outputs if o is not None and o.is_floating_point()]
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=F64).to(o)).sum() for o in used)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


# --- 1. each op: the reference inside, the fused kernel outside ------------------------------------


def _kl_case(family, reduction, p_shape):
    return (f"expfam_kl-{family}-{reduction}-p{list(p_shape)}",
            lambda: kl_inputs(6, 3, p_shape, F64, "cpu"),
            lambda *a: expfam_kl(*a, family, reduction),
            lambda *a: reference.expfam_kl(*a, family, reduction),
            "expfam_kl")


def _aggregate_inputs():
    gen = torch.Generator().manual_seed(0)
    z, loc = torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(7, 3, generator=gen, dtype=F64)
    log_scale = 0.3 * torch.randn(7, 3, generator=gen, dtype=F64)
    return [t.requires_grad_() for t in (z, loc, log_scale)]


def _mmd_inputs():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=gen, dtype=F64), 0.5 + torch.randn(5, 3, generator=gen, dtype=F64)
    return [x.requires_grad_(), y.requires_grad_()]


CASES = [
    _kl_case("gaussian", "sum", (6, 3)),
    _kl_case("laplace", "none", (3,)),
    _kl_case("gaussian", "none", (6, 1)),
    _kl_case("laplace", "sum", ()),
    ("icnn_map", lambda: icnn_inputs(7, 3, 5, 2), icnn_map, reference.icnn_map, "icnn_map"),
    ("brenier_map_logdet", lambda: icnn_inputs(7, 3, 5, 2), brenier_map_logdet,
     lambda *a: (*reference.icnn_map(*a), reference.brenier_logdet(*a)), "brenier_logdet"),
    ("brenier_map_logdet-info", lambda: icnn_inputs(6, 2, 4, 3), lambda *a: brenier_map_logdet(*a, return_info=True),
     lambda *a: (*reference.icnn_map(*a), reference.brenier_logdet(*a), torch.zeros(6, dtype=torch.int32)),
     "brenier_logdet"),
    ("brenier_logdet", lambda: icnn_inputs(5, 3, 4, 1), brenier_logdet, reference.brenier_logdet, "brenier_logdet"),
    ("brenier_logdet-info", lambda: icnn_inputs(5, 3, 4, 2), lambda *a: brenier_logdet(*a, return_info=True),
     lambda *a: (reference.brenier_logdet(*a), torch.zeros(5, dtype=torch.int32)), "brenier_logdet"),
    ("aggregate_log_q-gaussian", _aggregate_inputs, aggregate_log_q, reference.aggregate_log_q, "aggregate_log_q"),
    ("aggregate_log_q-laplace-joint-only", _aggregate_inputs,
     lambda *a: aggregate_log_q(*a, "laplace", with_marginals=False),
     lambda *a: (reference.aggregate_log_q(*a, "laplace")[0], None), "aggregate_log_q"),
    ("imq_mmd-per_dim", _mmd_inputs, imq_mmd, reference.imq_mmd, "imq_mmd"),
    ("imq_mmd-joint", _mmd_inputs, lambda *a: imq_mmd(*a, (0.5, 3.0), False),
     lambda *a: reference.imq_mmd(*a, (0.5, 3.0), False), "imq_mmd"),
]


def assert_same_structure(got, want):
    assert type(got) is type(want), f"{type(got).__name__} != {type(want).__name__}"
    got, want = as_tuple(got), as_tuple(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            assert g.shape == w.shape and g.dtype == w.dtype, f"{g.shape}/{g.dtype} != {w.shape}/{w.dtype}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_inside_the_switch_each_op_is_the_reference_bit_for_bit(case):
    _, make_inputs, op, ref, kernel = case
    inputs = make_inputs()
    with use_reference_ops(), RecordOps() as recorded:
        assert reference_ops_enabled()
        got = op(*inputs)
        got_grads = random_projection_grads(as_tuple(got), inputs)
    assert recorded.fused() == set(), "no fused kernel may run inside the switch, forward or backward"
    assert not reference_ops_enabled()

    want = ref(*inputs)
    want_grads = random_projection_grads(as_tuple(want), inputs)
    assert_same_structure(got, want)
    for g, w in zip(as_tuple(got) + tuple(got_grads), as_tuple(want) + tuple(want_grads)):
        assert g is None or torch.equal(g, w), (g, w)

    # Outside the switch the fused kernel runs (forward and backward), with the same return
    # conventions and, in float64, the same numbers up to rounding.
    with RecordOps() as recorded:
        fused = op(*inputs)
        fused_grads = random_projection_grads(as_tuple(fused), inputs)
    assert {f"ivae_ext.{kernel}.default", f"ivae_ext.{kernel}_backward.default"} <= recorded.fused()
    assert_same_structure(fused, got)
    for f, g in zip(as_tuple(fused) + tuple(fused_grads), as_tuple(got) + tuple(got_grads)):
        if f is not None:
            torch.testing.assert_close(f, g, rtol=1e-9, atol=1e-10)


# --- the fused ops' contract on the reference path -------------------------------------------------


def _icnn_args():
    return [t.detach() for t in icnn_inputs(4, 3, 5, 2)]


def _kl_args():
    return [t.detach() for t in kl_inputs(4, 3, (4, 3), F64, "cpu")]


BAD_CALLS = {
    "kl-family": lambda: expfam_kl(*_kl_args(), "poisson"),
    "kl-p-shape": lambda: expfam_kl(*(a if i != 2 else a[:, :2] for i, a in enumerate(_kl_args()))),
    "kl-dtype": lambda: expfam_kl(*(a if i != 1 else a.float() for i, a in enumerate(_kl_args()))),
    "icnn-A-shape": lambda: icnn_map(*(a if i != 1 else a[:, :, :2] for i, a in enumerate(_icnn_args()))),
    "icnn-negative-alpha": lambda: icnn_map(*_icnn_args()[:5], torch.tensor(-0.5, dtype=F64)),
    "logdet-x-shape": lambda: brenier_logdet(*(a if i != 0 else a[0] for i, a in enumerate(_icnn_args()))),
    "logdet-dtype": lambda: brenier_map_logdet(*(a if i != 4 else a.float() for i, a in enumerate(_icnn_args()))),
    "logdet-negative-alpha": lambda: brenier_logdet(*_icnn_args()[:5], torch.tensor(-0.5, dtype=F64)),
    "aggregate-empty-mixture": lambda: aggregate_log_q(torch.zeros(3, 2, dtype=F64), torch.zeros(0, 2, dtype=F64),
                                                       torch.zeros(0, 2, dtype=F64)),
    "aggregate-half": lambda: aggregate_log_q(*(torch.zeros(3, 2, dtype=torch.float16) for _ in range(3))),
    "mmd-one-sample": lambda: imq_mmd(torch.zeros(1, 3, dtype=F64), torch.zeros(4, 3, dtype=F64)),
    "mmd-dimensions": lambda: imq_mmd(torch.zeros(2, 3, dtype=F64), torch.zeros(4, 2, dtype=F64)),
    "mmd-dtype": lambda: imq_mmd(torch.zeros(2, 3), torch.zeros(4, 3, dtype=F64)),
    "mmd-scales": lambda: imq_mmd(torch.zeros(2, 3), torch.zeros(4, 3), (1.0, 0.0)),
}
# The C++ kernels spell dtypes as c10 does, the Python checks (fake kernels, reference path) as torch.
_DTYPE_SPELLING = {"torch.float64": "Double", "torch.float32": "Float", "torch.float16": "Half"}


def _error_of(call):
    with pytest.raises(Exception) as caught:
        call()
    message = str(caught.value)
    for python_name, c10_name in _DTYPE_SPELLING.items():
        message = message.replace(python_name, c10_name)
    return type(caught.value), message


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_reference_path_raises_the_fused_ops_errors(name):
    fused = _error_of(BAD_CALLS[name])
    with use_reference_ops():
        assert _error_of(BAD_CALLS[name]) == fused


def _not_convex_inputs():
    """Negative output weights and α = 0: ψ is concave, no Hessian is positive definite."""
    x, A, b, W, w, _ = _icnn_args()
    return x, A, b, W, -50.0 * w.abs(), torch.tensor(0.0, dtype=F64)


def test_non_positive_definite_policy_is_the_fused_ops():
    args = _not_convex_inputs()
    fused_error = _error_of(lambda: brenier_logdet(*args))
    fused = brenier_map_logdet(*args, check=False, return_info=True)
    with use_reference_ops():
        assert _error_of(lambda: brenier_logdet(*args)) == fused_error
        got = brenier_map_logdet(*args, check=False, return_info=True)
    assert got[3].dtype == torch.int32 and torch.equal(got[3], fused[3]) and bool((got[3] > 0).all())
    assert torch.isnan(got[2]).all() and torch.isnan(fused[2]).all()

    x, A, b, W, w, alpha = _icnn_args()
    x[1, 0] = float("nan")
    with use_reference_ops():
        logdet, info = brenier_logdet(x, A, b, W, w, alpha, return_info=True)  # check=True: NaN is not an error
    assert info.tolist() == [0, -1, 0, 0] == brenier_logdet(x, A, b, W, w, alpha, return_info=True)[1].tolist()
    assert torch.isnan(logdet[1]) and torch.isfinite(logdet[[0, 2, 3]]).all()


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "inputs_without_grad", "grad"])
@pytest.mark.parametrize("op", ["icnn_map", "brenier_map_logdet", "expfam_kl", "aggregate_log_q", "imq_mmd"])
def test_autograd_metadata_is_the_fused_ops(op, mode):
    """The reference records its own graph (double backprop) even under no_grad; the reference
    path keeps a graph only where the fused op records one, and works under inference mode."""
    inputs = {"icnn_map": lambda: icnn_inputs(4, 3, 5, 2), "brenier_map_logdet": lambda: icnn_inputs(4, 3, 5, 2),
              "expfam_kl": lambda: kl_inputs(4, 3, (3,), F64, "cpu"), "aggregate_log_q": _aggregate_inputs,
              "imq_mmd": _mmd_inputs}[op]()
    fn = {"icnn_map": icnn_map, "brenier_map_logdet": lambda *a: brenier_map_logdet(*a, return_info=True),
          "expfam_kl": expfam_kl, "aggregate_log_q": aggregate_log_q, "imq_mmd": imq_mmd}[op]
    if mode == "inputs_without_grad":
        inputs = [t.detach() for t in inputs]
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode, torch.enable_grad)

    def metadata():
        with context():
            return [(o.shape, o.dtype, o.requires_grad, o.is_inference()) for o in as_tuple(fn(*inputs))]

    fused = metadata()
    with use_reference_ops():
        assert metadata() == fused


@pytest.mark.parametrize("op", ["icnn_map", "brenier_map_logdet", "expfam_kl", "aggregate_log_q"])
def test_empty_batch_gives_the_fused_ops_shapes(op):
    x, A, b, W, w, alpha = (t.detach() for t in icnn_inputs(0, 3, 5, 2))
    q = torch.zeros(0, 3, dtype=F64)
    call = {"icnn_map": lambda: icnn_map(x, A, b, W, w, alpha),
            "brenier_map_logdet": lambda: brenier_map_logdet(x, A, b, W, w, alpha, return_info=True),
            "expfam_kl": lambda: expfam_kl(q, q, 0.0, 0.0, "laplace", "none"),
            "aggregate_log_q": lambda: aggregate_log_q(q, torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, dtype=F64))}[op]
    fused = call()
    with use_reference_ops():
        assert_same_structure(call(), fused)


def test_second_derivatives_work_inside_the_switch_only():
    q, q_log_scale, p, p_log_scale = kl_inputs(4, 3, (4, 3), F64, "cpu")

    def second_derivative():
        (g,) = torch.autograd.grad(expfam_kl(q, q_log_scale, p, p_log_scale).sum(), q, create_graph=True)
        return torch.autograd.grad(g.sum(), p_log_scale)[0]

    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        second_derivative()
    with use_reference_ops():
        got = second_derivative()
    # ∂KL/∂μq = (μq − μp) e^{−2ℓp}, so its derivative in ℓp is −2 (μq − μp) e^{−2ℓp}.
    want = -2 * (q - p) * torch.exp(-2 * p_log_scale)
    torch.testing.assert_close(got, want.detach())


# --- 2. models: same loss and gradients with and without the switch ---------------------------------


def _batch(n=32, data_dim=2, aux_dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.one_hot(torch.randint(aux_dim, (n,), generator=gen), aux_dim).to(F64)
    return {"x": torch.randn(n, data_dim, generator=gen, dtype=F64), "u": u}


def _loss_and_grads(model, batch, record):
    torch.manual_seed(3)  # the models' reparametrised samples
    model.zero_grad()
    with RecordOps() as recorded:
        terms = model.loss(batch)
        terms["loss"].backward()
    record.update(recorded.fused())
    return terms["loss"].detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _ivae(objective, prior):
    torch.manual_seed(0)
    model = IVAE(2, 2, 4, hidden_dim=8, prior=prior, objective=objective).double()
    model.dataset_size = 256
    return model


def _vae():
    torch.manual_seed(0)
    return VAE(2, 2, hidden_dim=8).double()


def _flow():
    torch.manual_seed(0)
    return ConvexPotentialFlow(2, hidden=8, layers=2, maps=2, strong_convexity=0.5, conditional_dim=4, dtype=F64)


MODELS = {
    "ivae-elbo-gaussian": (lambda: _ivae("elbo", "gaussian"), _batch, "expfam_kl"),
    "ivae-elbo-laplace": (lambda: _ivae("elbo", "laplace"), _batch, "expfam_kl"),
    "ivae-weighted": (lambda: _ivae("weighted", "gaussian"), _batch, "aggregate_log_q"),
    "vae": (_vae, lambda: {"x": _batch()["x"]}, "expfam_kl"),
    "flow-conditional": (_flow, _batch, "brenier_logdet"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_models_give_the_same_loss_and_gradients_on_the_reference_ops(name):
    make_model, make_batch, kernel = MODELS[name]
    model, batch = make_model(), make_batch()
    fused_ops, reference_ops = set(), set()
    fused_loss, fused_grads = _loss_and_grads(model, batch, fused_ops)
    with use_reference_ops():
        ref_loss, ref_grads = _loss_and_grads(model, batch, reference_ops)
    assert f"ivae_ext.{kernel}.default" in fused_ops, "the model must reach the op through its wrapper"
    assert reference_ops == set(), f"fused kernels ran inside the switch: {reference_ops}"
    assert len(ref_grads) == len(fused_grads) > 0
    torch.testing.assert_close(ref_loss, fused_loss, rtol=1e-10, atol=1e-10)
    for g_ref, g_fused in zip(ref_grads, fused_grads):
        torch.testing.assert_close(g_ref, g_fused, rtol=1e-10, atol=1e-10)


def test_brenier_map_module_and_flow_inverse_on_the_reference_ops():
    """icnn_map through ivae_ext.nn (forward with gradients, and the no_grad Newton inverse)."""
    torch.manual_seed(0)
    brenier = BrenierMap(2, 8, 2, strong_convexity=0.5, dtype=F64)
    x = _batch(n=16)["x"]

    def run():
        brenier.zero_grad()
        with RecordOps() as recorded:
            y, psi = brenier(x, return_potential=True)
            ((y * y).sum() + psi.sum()).backward()
            x_back = brenier.inverse(y.detach(), tol=1e-10)
        return recorded.fused(), [y.detach(), psi.detach(), x_back] + [p.grad.clone() for p in brenier.parameters()]

    fused_ops, fused = run()
    with use_reference_ops():
        reference_ops, got = run()
    assert "ivae_ext.icnn_map.default" in fused_ops and reference_ops == set()
    for g, f in zip(got, fused):
        torch.testing.assert_close(g, f, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[2], x, rtol=0, atol=1e-9)


# --- 3. nesting, exceptions, decorator use ----------------------------------------------------------


def test_nesting_restores_each_enclosing_state():
    assert not reference_ops_enabled()
    with use_reference_ops():
        assert reference_ops_enabled()
        with use_reference_ops(False):
            assert not reference_ops_enabled()
            with use_reference_ops(True):
                assert reference_ops_enabled()
            assert not reference_ops_enabled()
        assert reference_ops_enabled()
        with use_reference_ops():
            assert reference_ops_enabled()
        assert reference_ops_enabled()
    assert not reference_ops_enabled()


def test_exceptions_restore_the_state():
    with pytest.raises(KeyError):
        with use_reference_ops():
            raise KeyError("boom")
    assert not reference_ops_enabled()
    with use_reference_ops():
        with pytest.raises(ValueError, match="expfam_kl: family"):
            with use_reference_ops(False):
                expfam_kl(*_kl_args(), "poisson")
        assert reference_ops_enabled()
    assert not reference_ops_enabled()


def test_decorator_and_reused_instances():
    @use_reference_ops()
    def on(depth=0):
        assert reference_ops_enabled()
        if depth < 2:
            on(depth + 1)  # re-entering the same decorator nests
        return reference_ops_enabled()

    @use_reference_ops()
    def fails():
        raise RuntimeError("inside")

    assert on() and not reference_ops_enabled()
    with pytest.raises(RuntimeError, match="inside"):
        fails()
    assert not reference_ops_enabled()

    switch = use_reference_ops()
    with switch:
        with use_reference_ops(False):
            with switch:
                assert reference_ops_enabled()
            assert not reference_ops_enabled()
        assert reference_ops_enabled()
    with switch:
        assert reference_ops_enabled()
    assert not reference_ops_enabled()


def test_bad_arguments_and_exports():
    with pytest.raises(TypeError, match=r"use_reference_ops: enabled must be a bool, got int"):
        use_reference_ops(1)
    with pytest.raises(TypeError, match=r"write @use_reference_ops\(\) with parentheses"):

        @use_reference_ops
        def forgot_parentheses():
            pass

    assert {"use_reference_ops", "reference_ops_enabled"} <= set(ivae_ext.ops.__all__)
    assert ivae_ext.ops.use_reference_ops is use_reference_ops


# --- 4. threads -------------------------------------------------------------------------------------


def _run_in_thread(fn):
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_a_thread_started_inside_the_switch_runs_the_fused_ops():
    args = _kl_args()

    def in_thread():
        with RecordOps() as recorded:
            expfam_kl(*args)
        return reference_ops_enabled(), recorded.fused()

    with use_reference_ops():
        enabled, ops = _run_in_thread(in_thread)
        assert reference_ops_enabled()
    assert enabled is False and "ivae_ext.expfam_kl.default" in ops


def test_switching_in_one_thread_leaves_the_others_alone():
    inside, checked = threading.Event(), threading.Event()
    switch = use_reference_ops()  # one instance, entered in two threads

    def worker():
        with switch:
            inside.set()
            checked.wait(timeout=30)
            state = reference_ops_enabled()
        return state, reference_ops_enabled()

    result = {}
    thread = threading.Thread(target=lambda: result.update(value=worker()))
    thread.start()
    assert inside.wait(timeout=30)
    try:
        assert not reference_ops_enabled(), "the worker's switch leaked into the main thread"
        with switch:
            assert reference_ops_enabled()
    finally:
        checked.set()
        thread.join(timeout=30)
    assert result["value"] == (True, False)
    assert not reference_ops_enabled()


# --- torch.compile: the switch is guarded, not baked in ----------------------------------------------


def test_compiled_function_follows_the_switch():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    def kl_term(q, q_log_scale, p, p_log_scale):
        return expfam_kl(q, q_log_scale, p, p_log_scale, "gaussian").mean()

    torch._dynamo.reset()
    compiled = torch.compile(kl_term, fullgraph=True, backend=backend)
    args = _kl_args()
    fused = compiled(*args)
    with use_reference_ops():
        ref = compiled(*args)
    again = compiled(*args)
    assert len(graphs) == 2, "entering the switch must recompile once, leaving it must reuse the first graph"
    assert "ivae_ext.expfam_kl" in graphs[0] and "ivae_ext" not in graphs[1]
    assert torch.equal(ref, reference.expfam_kl(*args).mean())
    assert torch.equal(again, fused)
    torch._dynamo.reset()
