"""Hostile-input fuzzing of every fused op (issue 16): hypothesis draws arguments, the op is called,
and each call must either raise a clear error or return what the float64 reference returns.

    python tests/fuzz_ops.py --examples 10000 --json runs/fuzz_ops.json      (make fuzz)
    python tests/fuzz_ops.py --examples 150                                   (CI: tests/test_fuzz_ops.py)
    python tests/fuzz_ops.py --examples 500 --ops imq_mmd --save-failures /tmp/cases   (replay with run_case)

One entry of ``OPS`` per op: how to draw its arguments (valid ones and hostile ones: shapes with
0, 1 and refused sizes, transposed / strided / offset / expanded views, a tensor on another device, float32/float64 and wrong dtypes,
huge, tiny, ±0, NaN and ±inf values, wrong Python types and option values), the op's contract
(which drawn arguments must be refused, naming which argument), the float64 reference and the
tolerance. A new op is fuzzed by adding an entry.

The property, per call:
* a refused call raises ValueError/TypeError/RuntimeError whose message names the op and (when
  the contract knows it) the offending argument; refusing arguments the contract calls valid is
  a failure unless the entry says the refusal is by design (e.g. brenier_logdet's check=True on a
  Hessian that is not positive definite, verified against the float64 Hessian);
* a returned call must have been valid by the contract (a silently accepted bad input is a
  failure) and its outputs (and, for a subset, its gradients) must match the reference computed
  in float64 on the same numbers wherever that reference is finite: |got - want| <= atol +
  rtol |want| + 50 * (the change of the float64 reference under a relative input perturbation
  of the input dtype's epsilon: its conditioning) + what an entry adds for rounding neither the
  op nor the reference can avoid (log det of an ill-conditioned Hessian; the float64 reference's
  own cancellation in Laplace KL gradients). A result may be ±inf, or NaN, where the float64 value
  exceeds the dtype's range (overflow). Counted as "range_limited", not judged: non-finite
  results where the reference computed in the op's own dtype is non-finite too, and (icnn_map,
  brenier_logdet) calls whose intermediates exceed the dtype's range, documented as unspecified.
  A finite result is always judged.

The ops run in a child process (this file with --worker) so that a segfault or abort is counted
as a crash of the op being fuzzed (and the example is printed) instead of ending the run; the
parent restarts a child for the remaining ops. Every op is also run under
``ivae_ext.ops.use_reference_ops()`` on a fraction of the examples (the same checks, the
reference path). Exit status 0 only with no crash, no silent wrong result, no accepted bad
input, no refused valid input and no error that fails to name the op or argument.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

COUNT_KEYS = ("calls", "drawn_invalid", "valid_matches", "range_limited", "clear_errors", "crashes", "silent_wrong",
              "accepted_bad_input", "refused_valid_input", "unnamed_errors", "grad_checks", "grad_mismatches")
FAILURE_KEYS = ("crashes", "silent_wrong", "accepted_bad_input", "refused_valid_input", "unnamed_errors",
                "grad_mismatches")
SUMMARY_PREFIX = "fuzz summary:"
RESULT_PREFIX = "FUZZ-RESULT "

# ------------------------------------------------------------------------------------------------
# Drawing arguments (torch is imported lazily: the parent process does not need it)

torch = None
st = None


def _imports():
    global torch, st
    import torch as _torch
    from hypothesis import strategies as _st

    torch, st = _torch, _st


SPECIALS = (float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e308, -1e308, 1e-308, 5e-324, 3.4e38,
            -3.4e38, 1e-45, 65504.0, 1e20, -1e20, 88.0, -104.0, 710.0, -745.0, 1e-30)
SCALES = (1.0, 1.0, 1.0, 0.3, 3.0, 1e-3, 30.0, 1e3, 1e-30, 1e30, 1e200)
LAYOUTS = ("contiguous", "contiguous", "transposed", "strided", "offset", "expanded")


@dataclass
class Arg:
    """One argument: a tensor (base storage + a layout that views it in its logical shape) or a
    constant (anything else: numbers, lists, None, numpy arrays, strings)."""

    name: str
    shape: tuple = ()
    dtype: object = None
    layout: str = "contiguous"
    base: object = None  # float64 values in the base's physical shape
    device: str = "cpu"
    value: object = None
    is_tensor: bool = True
    describe: str = ""

    def view(self, base):
        if self.layout == "transposed":
            return base.permute(*reversed(range(base.dim())))
        if self.layout == "strided":
            return base[..., ::2]
        if self.layout == "offset":
            return base[1:]
        if self.layout == "expanded":
            return base.expand(self.shape)
        return base


def physical_shape(shape, layout, expand_dim):
    shape = list(shape)
    if layout == "transposed":
        return tuple(reversed(shape))
    if layout == "strided":
        return tuple(shape[:-1] + [2 * shape[-1]])
    if layout == "offset":
        return tuple([shape[0] + 1] + shape[1:])
    if layout == "expanded":
        shape[expand_dim] = 1
        return tuple(shape)
    return tuple(shape)


def chance(data, n, label):
    """True with probability about 1/n. The middle value, not 0: hypothesis starts from (and
    shrinks towards) the minimal draw, which should be the plain, valid case."""
    return data.draw(st.integers(0, n - 1), label=label) == n // 2


def pick(data, common, rare, label, n=12):
    """One of `rare` with probability about 1/n, else one of `common` (hypothesis's index draws
    favour the ends of a sampled_from list, so rare choices are not simply appended to it)."""
    if rare and chance(data, n, f"{label} rare?"):
        return data.draw(st.sampled_from(rare), label=label)
    return data.draw(st.sampled_from(common), label=label)


def draw_values(data, shape, positive=False, label=""):
    """float64 values: a random scale (mostly 1, sometimes huge or tiny) and sometimes special
    values (NaN, ±inf, ±0, float32 edges, subnormals) at a few places."""
    seed = data.draw(st.integers(0, 2**31 - 1), label=f"{label} seed")
    scale = data.draw(st.sampled_from(SCALES), label=f"{label} scale")
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(shape, generator=gen, dtype=torch.float64) if positive else torch.randn(
        shape, generator=gen, dtype=torch.float64)
    values = values * scale
    count = values.numel()
    if count and chance(data, 10, f"{label} specials?"):
        for _ in range(data.draw(st.integers(1, 3), label=f"{label} how many")):
            flat = data.draw(st.integers(0, count - 1), label=f"{label} where")
            values.view(-1)[flat] = data.draw(st.sampled_from(SPECIALS), label=f"{label} special")
    return values


def tensor_arg(data, name, shape, dtype, positive=False, layouts=LAYOUTS):
    shape = tuple(shape)
    candidates = [lay for lay in layouts if _layout_fits(lay, shape)]
    layout = data.draw(st.sampled_from(candidates), label=f"{name} layout")
    expand_dim = 0
    if layout == "expanded":
        expand_dim = data.draw(st.integers(0, len(shape) - 1), label=f"{name} expand dim")
    base = draw_values(data, physical_shape(shape, layout, expand_dim), positive, label=name)
    return Arg(name=name, shape=shape, dtype=dtype, layout=layout, base=base)


def _layout_fits(layout, shape):
    if layout == "transposed":
        return len(shape) >= 2
    if layout in ("strided", "offset", "expanded"):
        return len(shape) >= 1
    return True


def const_arg(name, value, describe=None):
    return Arg(name=name, is_tensor=False, value=value, describe=describe or repr(value))


FLOATS = ("float32", "float64")
HALF = ("float16", "bfloat16")
WRONG = ("int64", "bool", "complex64", "complex128")


def draw_dtypes(data, names, allowed=FLOATS + HALF + WRONG):
    """One dtype for all tensors (mostly float32/float64), sometimes one argument differs."""
    main = pick(data, FLOATS, tuple(d for d in allowed if d not in FLOATS), "dtype", n=6)
    dtypes = {name: main for name in names}
    if chance(data, 12, "mixed dtype?"):
        odd = data.draw(st.sampled_from(names), label="odd dtype arg")
        dtypes[odd] = data.draw(st.sampled_from(tuple(d for d in FLOATS + HALF + WRONG if d != main)),
                                label="odd dtype")
    return dtypes


def wrong_type_value(data, arg_like_shape, name):
    """Something that is not a tensor, in place of a tensor argument."""
    kind = data.draw(st.sampled_from(("list", "none", "numpy", "float", "int", "str", "bool", "tuple", "nan")),
                     label=f"{name} wrong type")
    values = np.zeros(arg_like_shape) + 0.5
    return kind, {"list": values.tolist(), "none": None, "numpy": values, "float": 0.5, "int": 2, "str": "0.5",
                  "bool": True, "tuple": tuple(np.zeros(arg_like_shape[:1]) + 0.5) if arg_like_shape else (0.5,),
                  "nan": float("nan")}[kind]


def maybe_break_shape(data, shape, name):
    """Usually `shape`; sometimes one more or one fewer dimension or one size changed."""
    fault = data.draw(st.integers(0, 63), label=f"{name} shape fault?")  # 31, 32, 33: a fault (0 is minimal)
    shape = list(shape)
    if fault == 31:
        return tuple([data.draw(st.sampled_from((1, 2)), label=f"{name} extra")] + shape)
    if fault == 32 and shape:
        return tuple(shape[1:])
    if fault == 33 and shape:
        i = data.draw(st.integers(0, len(shape) - 1), label=f"{name} which dim")
        shape[i] = data.draw(st.sampled_from((0, 1, shape[i] + 1, max(shape[i] - 1, 0))), label=f"{name} size")
        return tuple(shape)
    return tuple(shape)


# ------------------------------------------------------------------------------------------------
# Cases: what is called, and what the contract says about it


@dataclass
class Case:
    args: list  # Arg, positional
    options: dict  # keyword options (plain values)
    expect: str = "valid"  # "valid": must match; "invalid": must be refused; "either": refuse clearly or match
    offending: tuple = ()  # argument names one of which a refusal must name (empty: the op's name suffices)
    reference_mode: bool = False  # call under use_reference_ops()
    check_grad: bool = False
    why: str = ""

    def describe(self):
        parts = []
        for a in self.args:
            if a.is_tensor:
                parts.append(f"{a.name}=Tensor{list(a.shape)}:{a.dtype}:{a.layout}:{a.device}"
                             f"{':special' if a.base is not None and not torch.isfinite(a.base).all() else ''}")
            else:
                parts.append(f"{a.name}={a.describe[:60]}")
        parts += [f"{k}={v!r}" for k, v in self.options.items()]
        mode = " [reference path]" if self.reference_mode else ""
        return ", ".join(parts) + mode


def dtype_of(name):
    return getattr(torch, name)


def materialize(case, dtype_override=None, requires_grad=False, perturb=None):
    """(positional values, leaves): tensors built from their float64 values in their dtype (or
    `dtype_override`), in their layout; `perturb` multiplies floating values by 1 + perturb * u."""
    values, leaves = [], []
    for a in case.args:
        if not a.is_tensor:
            values.append(a.value)
            continue
        base = a.base
        dtype = dtype_of(dtype_override or a.dtype)
        if dtype_override is not None and a.dtype not in FLOATS + HALF:
            raise AssertionError("a reference is only computed for floating arguments")
        if dtype_override is not None:
            # the same numbers as the op sees: round to the op's dtype first
            base = base.to(dtype_of(a.dtype)).to(dtype)
        else:
            base = base.to(dtype)
        if perturb is not None:
            gen = torch.Generator().manual_seed(hash(a.name) % 1000)
            base = base * (1 + perturb * (2 * torch.rand(base.shape, generator=gen, dtype=base.dtype) - 1))
        if a.device != "cpu":
            base = base.to(a.device)
        if requires_grad and base.is_floating_point():
            base = base.detach().requires_grad_()
            leaves.append(base)
        values.append(a.view(base))
    return values, leaves


@dataclass
class OpSpec:
    """One op's table entry."""

    name: str
    draw: object  # (data) -> Case
    call: object  # (values, options) -> tuple of output tensors (the fused op)
    reference: object  # (values64, options) -> tuple of float64 outputs (the oracle)
    rtol: dict = field(default_factory=lambda: {"float64": 1e-9, "float32": 2e-5, "float16": 2e-3,
                                                 "bfloat16": 1.6e-2})
    atol: dict = field(default_factory=lambda: {"float64": 1e-12, "float32": 1e-6, "float16": 1e-3,
                                                 "bfloat16": 1e-2})
    # (case, exception message, values64) -> True when refusing this valid input is by design
    refusal_by_design: object = None
    # (case, outputs) -> bool mask per output of entries to compare (default: all)
    compare_mask: object = None
    # (case, outputs) -> True to skip the gradient check (a documented, flagged degenerate case)
    skip_grad: object = None
    # (case) -> True when the call's numbers lie beyond what its dtype can compute (documented):
    # outputs are not compared, the call counts under range_limited
    beyond_range: object = None
    # (case, outputs) -> per output, more allowed error (rounding both the op and the reference
    # cannot avoid, e.g. log det of an ill-conditioned matrix), or None
    output_rounding: object = None
    # (case, weights, reference gradients) -> per differentiable argument, the float64 reference gradient's own rounding
    # error (autograd sums terms that cancel), added to the allowed error
    grad_rounding: object = None


def names_clearly(message, op, offending):
    if op not in message:
        return False
    if not offending:
        return True
    return any(re.search(rf"(?<![A-Za-z_]){re.escape(n)}(?![A-Za-z_])", message) for n in offending)


# ------------------------------------------------------------------------------------------------
# The table


def _dtype_problems(args, allowed, ref_name):
    """Names of tensor arguments whose dtype the op must refuse: not in `allowed`, or not `ref_name`'s."""
    bad = []
    ref = next((a for a in args if a.name == ref_name), None)
    for a in args:
        if a.dtype not in allowed or (ref is not None and a.dtype != ref.dtype):
            bad.append(a.name)
    if bad and ref_name not in bad and ref is not None:
        bad.append(ref_name)  # "ref and X must have the same dtype" names both
    return bad


def _device_problems(args, ref_name):
    bad = [a.name for a in args if a.is_tensor and a.device != "cpu"]
    return bad + [ref_name] if bad else []


def _maybe_meta(data, args):
    """Rarely, one tensor on the meta device (a different device from the rest)."""
    if chance(data, 41, "other device?"):
        tensors = [a for a in args if a.is_tensor]
        if tensors:
            data.draw(st.sampled_from(tensors), label="meta arg").device = "meta"


def _mode_and_grad(data, case):
    case.reference_mode = chance(data, 5, "reference path?")
    case.check_grad = chance(data, 3, "gradient?")
    return case


def _batch(data, label, low=0, big=70):
    return pick(data, tuple(range(max(low, 1), 7)) + (2, 3), (0, 1, big), label, n=4)


# --- expfam_kl -----------------------------------------------------------------------------------

def draw_expfam_kl(data):
    B, d = _batch(data, "B"), data.draw(st.sampled_from((0, 1, 2, 3, 5, 33)), label="d")
    dtypes = draw_dtypes(data, ("q_loc", "q_log_scale", "p_loc", "p_log_scale"))
    p_shapes = ((), (d,), (1, d), (B, 1), (B, d), (1,), (1, 1), (B,), (d, B), (B, d, 1), (2, B, d), (B + 1, d))
    args = [tensor_arg(data, "q_loc", maybe_break_shape(data, (B, d), "q_loc"), dtypes["q_loc"]),
            tensor_arg(data, "q_log_scale", maybe_break_shape(data, (B, d), "q_log_scale"), dtypes["q_log_scale"])]
    for name in ("p_loc", "p_log_scale"):
        shape = pick(data, p_shapes[:5], p_shapes[5:], f"{name} shape", n=5)
        args.append(tensor_arg(data, name, shape, dtypes[name]))
    for i, a in enumerate(args):
        if chance(data, 20, f"{a.name} wrong type?"):
            kind, value = wrong_type_value(data, a.shape, a.name)
            args[i] = const_arg(a.name, value, kind)
    options = {"family": pick(data, ("gaussian", "laplace"), ("Gaussian", "", None, 3), "family"),
               "reduction": pick(data, ("sum", "none"), ("mean", None, True), "reduction")}
    _maybe_meta(data, args)
    case = _mode_and_grad(data, Case(args=args, options=options))
    # the contract (DESIGN.md op 1; ivae_ext/ops/expfam_kl.py)
    problems = []
    if options["family"] not in ("gaussian", "laplace"):
        problems.append("family")
    if options["reduction"] not in ("sum", "none"):
        problems.append("reduction")
    q_loc, q_log_scale, p_loc, p_log_scale = args
    for a in args:
        if not a.is_tensor:
            # p's may be real numbers (not bool); anything else is refused
            if not (a.name.startswith("p_") and isinstance(a.value, (int, float)) and not isinstance(a.value, bool)):
                problems.append(a.name)
    tensors = [a for a in args if a.is_tensor]
    problems += _dtype_problems(tensors, FLOATS + HALF, "q_loc")
    problems += _device_problems(tensors, "q_loc")
    if q_loc.is_tensor and len(q_loc.shape) != 2:
        problems.append("q_loc")
    if q_loc.is_tensor and q_log_scale.is_tensor and q_log_scale.shape != q_loc.shape:
        problems.append("q_log_scale")
    if q_loc.is_tensor and len(q_loc.shape) == 2:
        b, dd = q_loc.shape
        for a in (p_loc, p_log_scale):
            if a.is_tensor:
                aligned = [1] * (2 - len(a.shape)) + list(a.shape)
                if not (len(a.shape) <= 2 and aligned[0] in (1, b) and aligned[1] in (1, dd)):
                    problems.append(a.name)
    case.expect = "invalid" if problems else "valid"
    case.offending = tuple(problems)
    return case


def call_expfam_kl(values, options):
    from ivae_ext.ops import expfam_kl

    return (expfam_kl(*values, family=options["family"], reduction=options["reduction"]),)


def reference_expfam_kl(values, options):
    from ivae_ext import reference

    q_loc = values[0]
    p = [v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64) for v in values[2:]]
    return (reference.expfam_kl(q_loc, values[1], *p, options["family"], options["reduction"]),)


def expfam_kl_grad_rounding(case, weights, want_grads):
    """The float64 reference's gradients come from autograd of the KL formula, which sums terms that
    can cancel (Laplace: 1/b_p - e^w/b_q for the location, both ~1e34 when b_p is tiny): their
    rounding, 64 eps times the terms' size, mapped to each argument like its gradient. A call on
    the reference path (use_reference_ops) runs that same formula in the op's dtype: its allowance
    is the same with the op's eps (float32 Laplace, b_q/b_p ~ 1e7 and |Δ|/b_q ~ 1e-4: two terms of
    1e5 cancel to a location gradient of 9 — the pure-PyTorch formula's rounding, not the fused op's)."""
    values, leaves = materialize(case, "float64", requires_grad=True)
    q_loc, lq, p_loc, lp = [v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
                            for v in values]
    with torch.no_grad():
        if case.options["family"] == "gaussian":
            z = (q_loc - p_loc) * torch.exp(-lp)
            scale = 1 + torch.expm1(2 * (lq - lp)).abs() + z * z + (z * torch.exp(-lp)).abs()
        else:
            dist = (q_loc - p_loc).abs()
            u, v = dist * torch.exp(-lq), dist * torch.exp(-lp)
            ew = torch.exp(lq - lp - u)
            scale = 1 + torch.exp(-lp) + ew * torch.exp(-lq) + ew * (1 + u) + v
        weight = weights[0].abs()
        op_dtype = dtype_of(next(a.dtype for a in case.args if a.is_tensor))
        eps = torch.finfo(op_dtype if case.reference_mode else torch.float64).eps
        c = 64 * eps * scale * (weight.unsqueeze(-1) if weight.dim() == 1 else weight)
    total = (c * (q_loc + lq + p_loc + lp)).sum()
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    # NaN: a term is inf·0 in float64 (its size unknown): no extra allowance there
    return [None if g is None else g.abs().nan_to_num(nan=0.0, posinf=float("inf")) for g in grads]


# --- icnn_map and brenier_map_logdet ------------------------------------------------------------

ICNN_NAMES = ("x", "A", "b", "W", "w", "alpha")


def draw_icnn_args(data, op):
    B = _batch(data, "B", big=40)
    d = data.draw(st.sampled_from((0, 1, 2, 3, 4) if op == "icnn_map" else (0, 1, 2, 3)), label="d")
    K = pick(data, (1, 2, 3, 2), (0,), "K", n=20)
    H = pick(data, (1, 2, 3, 5), (0,), "H", n=20)
    dtypes = draw_dtypes(data, ICNN_NAMES)
    shapes = {"x": (B, d), "A": (K, H, d), "b": (K, H), "W": (max(K - 1, 0), H, H), "w": (H,)}
    args = []
    for name in ICNN_NAMES[:5]:
        shape = maybe_break_shape(data, shapes[name], name)
        positive = name in ("W", "w") and not chance(data, 5, f"{name} signed?")
        args.append(tensor_arg(data, name, shape, dtypes[name], positive=positive))
    alpha_kind = pick(data, ("float", "tensor", "float", "tensor", "int"),
                      ("negative", "nan", "inf", "1-d", "bool", "list", "none", "numpy", "str"), "alpha kind", n=8)
    alpha_value = data.draw(st.sampled_from((0.0, 0.1, 0.3, 1.0, 0.0, 1e-3, 50.0)), label="alpha value")
    if alpha_kind in ("tensor", "1-d", "negative", "nan", "inf"):
        v = {"negative": -0.5, "nan": float("nan"), "inf": float("inf")}.get(alpha_kind, alpha_value)
        as_tensor = alpha_kind == "1-d" or data.draw(st.booleans(), label="alpha as tensor")
        if as_tensor:
            a = Arg(name="alpha", shape=(1,) if alpha_kind == "1-d" else (), dtype=dtypes["alpha"],
                    base=torch.full((1,) if alpha_kind == "1-d" else (), v, dtype=torch.float64))
        else:
            a = const_arg("alpha", v)
    else:
        a = const_arg("alpha", {"float": alpha_value, "int": int(alpha_value), "bool": False, "list": [alpha_value],
                                "none": None, "numpy": np.array([alpha_value]), "str": "0.1"}[alpha_kind])
    args.append(a)
    for i, arg in enumerate(args[:5]):
        if chance(data, 30, f"{arg.name} wrong type?"):
            kind, value = wrong_type_value(data, arg.shape, arg.name)
            args[i] = const_arg(arg.name, value, kind)
    _maybe_meta(data, args)
    # the contract (DESIGN.md op 2; ivae_ext/ops/icnn_map.py)
    problems = []
    for arg in args:
        if not arg.is_tensor:
            ok_number = arg.name == "alpha" and isinstance(arg.value, (int, float)) and not isinstance(arg.value, bool)
            if not ok_number or not (0 <= arg.value < float("inf")):  # α: a finite number >= 0
                problems.append(arg.name)
    tensors = [t for t in args if t.is_tensor]
    problems += _dtype_problems(tensors, FLOATS + HALF, "x")
    problems += _device_problems(tensors, "x")
    half = any(t.dtype in HALF for t in tensors)
    x, A, b, W, w, alpha = args
    if x.is_tensor and len(x.shape) != 2:
        problems.append("x")
    if A.is_tensor and (len(A.shape) != 3 or A.shape[0] < 1 or A.shape[1] < 1
                        or (x.is_tensor and len(x.shape) == 2 and A.shape[2] != x.shape[1])):
        problems.append("A")
    if A.is_tensor and len(A.shape) == 3:
        KK, HH = A.shape[:2]
        for t, want in ((b, (KK, HH)), (W, (KK - 1, HH, HH)), (w, (HH,))):
            if t.is_tensor and tuple(t.shape) != want:
                problems.append(t.name)
    if alpha.is_tensor and (alpha.shape != () or not 0 <= float(alpha.base) < float("inf")):
        problems.append("alpha")
    expect = "invalid" if problems else ("either" if half else "valid")
    # float16/bfloat16: DESIGN.md allows them on CUDA "where it makes sense"; the CPU kernels refuse
    # them with a clear error, the reference path computes in them: either is fine.
    return args, expect, tuple(problems)


def icnn_beyond_dtype_range(case):
    """Whether an intermediate of the ICNN sweeps (pre-activations a_k, or the reverse sweep's
    s_k = W_{k+1}ᵀ g_{k+1}), computed in float64, exceeds the op's dtype range (1/16 of its max).
    By design (icnn_map's docstring): results are then unspecified, possibly finite — the GEMMs
    accumulate with fused multiply-adds, so a sum of overflowing terms becomes ±inf (e.g. +inf
    where the exact sum is negative) rather than NaN. The fuzzer found it (x and A ~1e30 in
    float32); such calls are counted under range_limited, not compared."""
    x, A, b, W, w, alpha = _alpha64(materialize(case, "float64")[0])
    limit = torch.finfo(dtype_of(case.args[0].dtype)).max / 16
    with torch.no_grad():
        a = x @ A[0].T + b[0]
        pre = [a]
        for k in range(1, A.shape[0]):
            a = torch.nn.functional.softplus(a) @ W[k - 1].T + x @ A[k].T + b[k]
            pre.append(a)
        s = w.expand_as(pre[-1])
        sweep = [s]
        for k in range(A.shape[0] - 1, 0, -1):
            s = (s * torch.sigmoid(pre[k])) @ W[k - 1]
            sweep.append(s)
        big = [t.abs().nan_to_num(nan=0.0).amax() > limit for t in pre + sweep if t.numel()]
    return any(bool(v) for v in big)


def brenier_beyond_dtype_range(case):
    """icnn_beyond_dtype_range, or the log-determinant's products J_k M J_kᵀ (J_k = ∂a_k/∂x, up to
    |J|²) beyond the dtype's range: e.g. A ~1e20 in float32 gives |J|² ~1e44 = inf, and inf·0
    (the third derivative of a saturated unit) = NaN in the backward where the true gradient is
    finite."""
    if icnn_beyond_dtype_range(case):
        return True
    x, A, b, W, w, alpha = _alpha64(materialize(case, "float64")[0])
    limit = torch.finfo(dtype_of(case.args[0].dtype)).max / 16
    with torch.no_grad():
        a = x @ A[0].T + b[0]
        jac = A[0].expand(x.shape[0], *A[0].shape)  # [B, H, d]
        biggest = jac.abs().amax() if jac.numel() else torch.tensor(0.0)
        for k in range(1, A.shape[0]):
            jac = W[k - 1] @ (torch.sigmoid(a).unsqueeze(-1) * jac) + A[k]
            a = torch.nn.functional.softplus(a) @ W[k - 1].T + x @ A[k].T + b[k]
            if jac.numel():
                biggest = torch.maximum(biggest, jac.abs().nan_to_num(nan=0.0).amax())
    return bool(biggest.double() ** 2 > limit)


def draw_icnn_map(data):
    args, expect, offending = draw_icnn_args(data, "icnn_map")
    case = _mode_and_grad(data, Case(args=args, options={}, expect=expect, offending=offending))
    return case


def call_icnn_map(values, options):
    from ivae_ext.ops import icnn_map

    return tuple(icnn_map(*values))


def _alpha64(values):
    alpha = values[5]
    return values[:5] + [alpha if isinstance(alpha, torch.Tensor) else torch.tensor(float(alpha), dtype=torch.float64)]


def reference_icnn_map(values, options):
    from ivae_ext import reference

    return tuple(reference.icnn_map(*_alpha64(values)))


def draw_brenier(data):
    args, expect, offending = draw_icnn_args(data, "brenier_logdet")
    options = {"check": pick(data, (True, False), ("no", None, 1), "check", n=20),
               "return_info": pick(data, (True, False), ("yes", 0), "return_info", n=20)}
    problems = list(offending)
    for key in ("check", "return_info"):
        if not isinstance(options[key], bool):
            problems.append(key)
    case = _mode_and_grad(data, Case(args=args, options=options, expect="invalid" if problems else expect,
                                     offending=tuple(problems)))
    return case


def call_brenier(values, options):
    from ivae_ext.ops import brenier_map_logdet

    return tuple(brenier_map_logdet(*values, **options))


def reference_brenier(values, options):
    from ivae_ext import reference

    values = _alpha64(values)
    psi, grad = reference.icnn_map(*values)
    logdet = reference.brenier_logdet(*values)
    out = (psi, grad, logdet)
    return out + (None,) if options["return_info"] is True else out


def _curvature_flushed_hessian(case):
    """∇²ψ(x) [B, d, d] by DESIGN.md op 3 in float64, αI + Σ_k J_kᵀ diag(c_k) J_k with
    c_k = s_k σ''(a_k), but with every c_k below the op's dtype's smallest normal number flushed
    to 0: the Hessian the op's dtype can represent (σ''(a) = e^-|a| underflows in float32 for
    |a| > 87, where float64 still has e^-300)."""
    x, A, b, W, w, alpha = _alpha64(materialize(case, "float64")[0])
    tiny = torch.finfo(dtype_of(case.args[0].dtype)).tiny
    with torch.no_grad():
        pre, jacs = [x @ A[0].T + b[0]], [A[0].expand(x.shape[0], *A[0].shape)]
        for k in range(1, A.shape[0]):
            jacs.append(W[k - 1] @ (torch.sigmoid(pre[-1]).unsqueeze(-1) * jacs[-1]) + A[k])
            pre.append(torch.nn.functional.softplus(pre[-1]) @ W[k - 1].T + x @ A[k].T + b[k])
        hess = alpha * torch.eye(x.shape[1], dtype=torch.float64).expand(x.shape[0], -1, -1)
        s = w.expand_as(pre[-1])
        for k in range(A.shape[0] - 1, -1, -1):
            e = torch.exp(-pre[k].abs())
            c = s * e / (1 + e) ** 2
            c = torch.where(c.abs() < tiny, torch.zeros_like(c), c)
            hess = hess + jacs[k].transpose(1, 2) @ (c.unsqueeze(-1) * jacs[k])
            if k:
                s = (s * torch.sigmoid(pre[k])) @ W[k - 1]
    return hess


def brenier_refusal_by_design(case, message, values64):
    """check=True refuses a Hessian that is not positive definite (module docstring): fine when the
    Hessian the op's dtype can represent (curvatures that underflow flushed to 0) is not positive
    definite, not finite, so badly conditioned that the dtype cannot factor it (smallest
    eigenvalue below 100·eps·largest), or has an eigenvalue below the dtype's normal numbers."""
    if "not positive definite" not in message:
        return False
    hess = _curvature_flushed_hessian(case)
    if not torch.isfinite(hess).all():
        return True
    if hess.shape[-1] == 0:
        return False
    eig = torch.linalg.eigvalsh(hess)
    finfo = torch.finfo(dtype_of(case.args[0].dtype))
    # ... or an eigenvalue below the dtype's normal range (products J_kᵀ c_k J_k underflow too)
    return bool(((eig[:, 0] <= 100 * finfo.eps * eig[:, -1].abs().clamp_min(1e-300))
                 | (eig[:, 0] < 1e3 * finfo.tiny)).any())


def _nearly_singular_rows(case):
    from ivae_ext import reference

    with torch.no_grad():
        hess = reference.icnn_hessian(*_alpha64(materialize(case, "float64")[0]))
        finite = torch.isfinite(hess).flatten(1).all(-1)
        eig = torch.linalg.eigvalsh(torch.where(finite[:, None, None], hess, torch.eye(hess.shape[-1],
                                                                                          dtype=hess.dtype)))
    eps = torch.finfo(dtype_of(case.args[0].dtype)).eps
    return ~finite | (eig[:, 0] <= 100 * eps * eig[:, -1].abs().clamp_min(1e-300)) if eig.shape[-1] else ~finite


def brenier_compare_mask(case, outputs):
    """logdet is NaN by policy where the op's Cholesky status is not 0 (flagged, documented):
    compared only where the status is 0. Without return_info the status is not visible: then a
    NaN logdet is accepted only where the float64 Hessian is nearly singular for the op's dtype
    (smallest eigenvalue below 100·eps·largest) or not finite."""
    logdet = outputs[2]
    if case.options["return_info"] is True:
        return (None, None, outputs[3] == 0, None)
    return (None, None, ~(torch.isnan(logdet) & _nearly_singular_rows(case)))


def _hessian_rounding(case):
    """Per sample, 64·d·eps·cond(∇²ψ) (float64 Hessian, eps of the op's dtype): how far rounding
    in forming the Hessian (in the op or in the reference) can move log det — first order,
    Σ δλ_i/λ_i with |δλ| <= eps·λ_max·(a small factor). inf where the Hessian is not positive
    definite or not finite."""
    from ivae_ext import reference

    with torch.no_grad():
        hess = reference.icnn_hessian(*_alpha64(materialize(case, "float64")[0]))
        d = hess.shape[-1]
        if d == 0:
            return torch.zeros(hess.shape[0], dtype=torch.float64)
        finite = torch.isfinite(hess).flatten(1).all(-1)
        eig = torch.linalg.eigvalsh(torch.where(finite[:, None, None], hess, torch.eye(d, dtype=hess.dtype)))
    eps = torch.finfo(dtype_of(case.args[0].dtype)).eps
    cond = eig[:, -1].abs() / eig[:, 0]
    bound = 64 * d * eps * cond
    return torch.where(finite & (eig[:, 0] > 0), bound, torch.full_like(bound, float("inf")))


def brenier_output_rounding(case, outputs):
    """log det of an ill-conditioned Hessian is determined only to its rounding (above)."""
    return (None, None, _hessian_rounding(case), None)


def brenier_grad_rounding(case, weights, want_grads, reference=None, rounding=None):
    """Every gradient of log det goes through the inverse Hessian, which rounding in forming the
    Hessian moves by about cond·eps relative: per sample, the Hessian rounding above times that
    sample's |∂ log det/∂(argument)| (float64 reference), weighted like the checked projection
    (float64, d = 2, cond 1.2e9: the op's A-gradient 1.5e-8 relative off the reference's)."""
    rounding = _hessian_rounding(case) if rounding is None else rounding
    logdet_weight = weights[2]
    values, leaves = materialize(case, "float64", requires_grad=True)
    extra = [torch.zeros_like(leaf) for leaf in leaves]
    with torch.enable_grad():
        logdet = (reference or reference_brenier)(values, case.options)[2]
        for i in range(logdet.shape[0]):
            c = float(logdet_weight[i].abs() * rounding[i])
            if c == 0 or not logdet.requires_grad:
                continue
            grads = torch.autograd.grad(logdet[i], leaves, retain_graph=True, allow_unused=True)
            for e, g in zip(extra, grads):
                if g is not None:
                    e += (c * g.abs()).nan_to_num(nan=0.0)  # inf·0: a zero gradient needs no allowance
    return extra


def brenier_skip_grad(case, outputs):
    """No gradient check where a sample was flagged (NaN logdet by policy): its NaN reaches every
    parameter's gradient, where the reference (slogdet of a barely positive matrix) may be finite;
    nor where the Hessian's conditioning leaves its inverse (in every gradient of log det)
    undetermined to 1e-3 in the op's dtype."""
    return bool(torch.isnan(outputs[2]).any()) or bool((_hessian_rounding(case) > 1e-3).any())


# --- stochastic_logdet_surrogate (brenier_map_surrogate) ------------------------------------------
# The probes are drawn inside the op from a generator; the reference draws the same ones (same
# seed, the op's dtype) and runs CP-Flow's schedule by autograd. tol is tiny and max_iter well
# above d, so both solve H u = v to their dtype's rounding: what remains is conditioning, allowed
# as for the log-determinant (its value ≈ vᵀv − vᵀr, its gradients through H⁻¹).

SURROGATE_MAX_ITER = 60
SURROGATE_SEED = 0


def draw_surrogate(data):
    args, expect, offending = draw_icnn_args(data, "brenier_logdet")
    options = {"probes": pick(data, (1, 2), (0, 1.5, True), "probes", n=20),
               "tol": pick(data, (1e-12,), (-1.0, float("nan")), "tol", n=20),
               "check": pick(data, (True, False), ("no", None, 1), "check", n=20)}
    problems = list(offending)
    if isinstance(options["probes"], bool) or not isinstance(options["probes"], int) or options["probes"] < 1:
        problems.append("probes")
    if not options["tol"] >= 0:
        problems.append("tol")
    if not isinstance(options["check"], bool):
        problems.append("check")
    x = args[0]
    options["_dtype"] = x.dtype if x.is_tensor else None  # which dtype the op draws its probes in
    return _mode_and_grad(data, Case(args=args, options=options, expect="invalid" if problems else expect,
                                     offending=tuple(problems)))


def _surrogate_generator():
    return torch.Generator().manual_seed(SURROGATE_SEED)


def call_surrogate(values, options):
    from ivae_ext.ops import brenier_map_surrogate

    return tuple(brenier_map_surrogate(*values, probes=options["probes"], tol=options["tol"],
                                       max_iter=SURROGATE_MAX_ITER, generator=_surrogate_generator(),
                                       check=options["check"], return_info=True))


def reference_surrogate(values, options):
    from ivae_ext import reference
    from ivae_ext.ops.logdet_surrogate import rademacher_probes

    x, A, b, W, w, alpha = _alpha64(values)
    like = torch.empty(0, dtype=dtype_of(options["_dtype"]))
    probes = rademacher_probes(options["probes"], x.shape[0], x.shape[1], like, _surrogate_generator()).double()
    psi, grad = reference.icnn_map(x, A, b, W, w, alpha)
    surrogate, _ = reference.stochastic_logdet_surrogate(x, A, b, W, w, alpha, probes, options["tol"],
                                                         SURROGATE_MAX_ITER)
    return psi, grad, surrogate, None


def surrogate_compare_mask(case, outputs):
    """The surrogate is NaN by policy where the op's iterations are −1 (CG met pᵀHp <= 0 or NaN):
    compared where they are not."""
    return (None, None, outputs[3] >= 0, None)


def _hessian_extremes(case):
    """(λ_min, λ_max) per sample of the float64 Hessian (NaN where it is not finite)."""
    from ivae_ext import reference

    with torch.no_grad():
        hess = reference.icnn_hessian(*_alpha64(materialize(case, "float64")[0]))
        if hess.shape[-1] == 0:
            zeros = torch.zeros(hess.shape[0], dtype=torch.float64)
            return zeros, zeros
        finite = torch.isfinite(hess).flatten(1).all(-1)
        eig = torch.linalg.eigvalsh(torch.where(finite[:, None, None], hess, torch.eye(hess.shape[-1], dtype=hess.dtype)))
    nan = torch.full_like(eig[:, 0], float("nan"))
    return torch.where(finite, eig[:, 0], nan), torch.where(finite, eig[:, -1], nan)


def _surrogate_rounding(case):
    """Per sample, the relative error the op and the reference may both carry in u = H⁻¹v and so in
    the surrogate and its gradients: the Hessian's rounding (as log det's, 64·d·eps·cond), the CG
    tolerance amplified by the conditioning (each side stops at |r| < tol: 4·tol·cond), and the
    reference's start at u = v (CP-Flow's): for λ ≫ 1 its first step cancels v against r₀/λ, an
    error of eps·λ_max relative (float64, d = 1, λ = 7e13: the reference's value 0.975 where
    vᵀHH⁻¹v = 1 and the op gives 1)."""
    low, high = _hessian_extremes(case)
    if case.args[0].shape[-1] == 0:  # d = 0: log det 0, nothing to solve
        return torch.zeros_like(low)
    cond = high.abs() / low
    eps64 = torch.finfo(torch.float64).eps
    extra = 4 * case.options["tol"] * cond + 64 * eps64 * high.abs().clamp_min(1.0)
    return _hessian_rounding(case) + extra.nan_to_num(nan=float("inf"))


def surrogate_output_rounding(case, outputs):
    """The surrogate ≈ vᵀv = d per probe: its allowance is the relative one times d."""
    return (None, None, _surrogate_rounding(case) * max(case.args[0].shape[-1] if case.args[0].shape else 1, 1), None)


def surrogate_refusal_by_design(case, message, values64):
    """check=True refuses a Hessian that is not positive definite — or one the op's dtype cannot
    tell from singular: brenier_logdet's rule, or Hessians so small that the CG's products H p of a
    residual-sized p underflow the dtype (λ_max·eps below 1e3·tiny: float32, λ ~ 1e-31)."""
    if brenier_refusal_by_design(case, message, values64):
        return True
    if "not positive definite" not in message:
        return False
    finfo = torch.finfo(dtype_of(case.args[0].dtype))
    _, high = _hessian_extremes(case)
    return bool((high.abs() * finfo.eps < 1e3 * finfo.tiny).any())


def surrogate_grad_rounding(case, weights, want_grads):
    """As brenier_grad_rounding, through the surrogate's gradients (also through H⁻¹: u = H⁻¹v)."""
    return brenier_grad_rounding(case, weights, want_grads, reference_surrogate, _surrogate_rounding(case))


def surrogate_skip_grad(case, outputs):
    """As brenier_skip_grad: no gradient check where a sample was flagged or the conditioning
    leaves H⁻¹ undetermined to 1e-3 in the op's dtype."""
    return bool((outputs[3] < 0).any()) or bool((_hessian_rounding(case) > 1e-3).any())


# --- aggregate_log_q -----------------------------------------------------------------------------

def draw_aggregate_log_q(data):
    B, N = _batch(data, "B"), _batch(data, "N")
    d = data.draw(st.sampled_from((0, 1, 2, 3, 5, 17)), label="d")
    names = ("z", "q_loc", "q_log_scale")
    dtypes = draw_dtypes(data, names)
    args = [tensor_arg(data, "z", maybe_break_shape(data, (B, d), "z"), dtypes["z"]),
            tensor_arg(data, "q_loc", maybe_break_shape(data, (N, d), "q_loc"), dtypes["q_loc"]),
            tensor_arg(data, "q_log_scale", maybe_break_shape(data, (N, d), "q_log_scale"), dtypes["q_log_scale"])]
    for i, a in enumerate(args):
        if chance(data, 30, f"{a.name} wrong type?"):
            kind, value = wrong_type_value(data, a.shape, a.name)
            args[i] = const_arg(a.name, value, kind)
    options = {"family": pick(data, ("gaussian", "laplace"), ("Laplace", None, 0), "family"),
               "with_marginals": pick(data, (True, False), (None, 1, "yes"), "with_marginals")}
    _maybe_meta(data, args)
    case = _mode_and_grad(data, Case(args=args, options=options))
    # the contract (DESIGN.md op 4; ivae_ext/ops/aggregate_log_q.py): float32/float64 only
    problems = []
    if options["family"] not in ("gaussian", "laplace"):
        problems.append("family")
    if not isinstance(options["with_marginals"], bool):
        problems.append("with_marginals")
    problems += [a.name for a in args if not a.is_tensor]
    tensors = [a for a in args if a.is_tensor]
    problems += _dtype_problems(tensors, FLOATS, "z")
    problems += _device_problems(tensors, "z")
    z, q_loc, q_log_scale = args
    if z.is_tensor and len(z.shape) != 2:
        problems.append("z")
    if q_loc.is_tensor and (len(q_loc.shape) != 2 or q_loc.shape[0] == 0
                            or (z.is_tensor and len(z.shape) == 2 and q_loc.shape[1] != z.shape[1])):
        problems.append("q_loc")
    if q_loc.is_tensor and q_log_scale.is_tensor and q_log_scale.shape != q_loc.shape:
        problems.append("q_log_scale")
    case.expect = "invalid" if problems else "valid"
    case.offending = tuple(problems)
    return case


def aggregate_log_q_grad_rounding(case, weights, want_grads):
    """By design (aggregate_log_q's docstring): the gradients' relative error grows with |log q|,
    the softmax weights coming from differences of log-densities of that size (1e-6 at
    |log q| ≈ 50, 1e-5 at 130 in float32, as the float32 reference). Allowed: 8·eps·max|log q|
    relative, max over the pairs' finite log-densities."""
    from ivae_ext import reference

    z, loc, log_scale = materialize(case, "float64")[0]
    with torch.no_grad():
        pairwise = reference.component_log_density(z.unsqueeze(1), loc.unsqueeze(0), log_scale.unsqueeze(0),
                                                   case.options["family"])
        joint = pairwise.sum(-1)
        sizes = torch.cat([pairwise.flatten(), joint.flatten()]).abs()
        sizes = sizes[torch.isfinite(sizes)]
        largest = float(sizes.max()) if sizes.numel() else 0.0
    eps = torch.finfo(dtype_of(case.args[0].dtype)).eps
    return [8 * eps * largest * g.abs() for g in want_grads]


def call_aggregate_log_q(values, options):
    from ivae_ext.ops import aggregate_log_q

    return tuple(aggregate_log_q(*values, family=options["family"], with_marginals=options["with_marginals"]))


def reference_aggregate_log_q(values, options):
    from ivae_ext import reference

    log_qz, marginals = reference.aggregate_log_q(*values, options["family"])
    return log_qz, (marginals if options["with_marginals"] else None)


# --- imq_mmd -------------------------------------------------------------------------------------

def draw_imq_mmd(data):
    n = pick(data, (2, 3, 4, 5, 7), (130, 0, 1), "n", n=6)
    m = pick(data, (2, 3, 4, 6), (65, 0, 1), "m", n=6)
    D = data.draw(st.sampled_from((0, 1, 2, 3, 5)), label="D")
    dtypes = draw_dtypes(data, ("x", "y"))
    args = [tensor_arg(data, "x", maybe_break_shape(data, (n, D), "x"), dtypes["x"]),
            tensor_arg(data, "y", maybe_break_shape(data, (m, D), "y"), dtypes["y"])]
    for i, a in enumerate(args):
        if chance(data, 30, f"{a.name} wrong type?"):
            kind, value = wrong_type_value(data, a.shape, a.name)
            args[i] = const_arg(a.name, value, kind)
    scales_kind = pick(data, ("default", "tuple", "list", "tensor", "tuple"),
                       ("empty", "negative", "zero", "nan", "inf", "str", "float", "2-d", "grad", "int tensor", "bool",
                        "tiny", "huge"), "scales kind", n=8)
    values = tuple(data.draw(st.lists(st.sampled_from((0.2, 1.0, 3.0, 1e-3, 700.0, 1e-120, 1e25)), min_size=1,
                                      max_size=4), label="scales"))
    scales = {"default": (0.2, 0.4, 1.0, 2.0, 4.0, 10.0), "tuple": values, "list": list(values),
              "tensor": torch.tensor(values, dtype=torch.float64), "empty": (), "negative": values + (-1.0,),
              "zero": (0.0,) + values, "nan": (float("nan"),), "inf": values + (float("inf"),), "str": "1.0",
              "float": 1.0, "2-d": torch.ones(2, 2), "grad": torch.ones(2, requires_grad=True),
              "int tensor": torch.tensor([1, 2]), "bool": (True,), "tiny": (1e-40,), "huge": (1e40, 1.0)}[scales_kind]
    options = {"scales": scales, "per_dim": pick(data, (True, False), (1, None, "yes"), "per_dim")}
    _maybe_meta(data, args)
    case = _mode_and_grad(data, Case(args=args, options=options))
    # the contract (DESIGN.md op 5; ivae_ext/ops/imq_mmd.py)
    problems = []
    if scales_kind in ("empty", "negative", "zero", "nan", "inf", "str", "float", "2-d", "grad", "int tensor", "bool"):
        problems.append("scales")
    if not isinstance(options["per_dim"], bool):
        problems.append("per_dim")
    problems += [a.name for a in args if not a.is_tensor]
    tensors = [a for a in args if a.is_tensor]
    problems += _dtype_problems(tensors, FLOATS, "x")
    problems += _device_problems(tensors, "x")
    x, y = args
    if x.is_tensor and (len(x.shape) != 2 or x.shape[0] < 2):
        problems.append("x")
    if y.is_tensor and (len(y.shape) != 2 or y.shape[0] < 2
                        or (x.is_tensor and len(x.shape) == 2 and y.shape[1] != x.shape[1])):
        problems.append("y")
    if x.is_tensor and x.dtype == "float32" and scales_kind not in ("str", "float", "2-d", "empty"):
        raw = tuple(scales.tolist()) if isinstance(scales, torch.Tensor) else tuple(scales)
        if not all(1e-30 <= c <= 1e30 for c in raw):
            problems.append("scales")
    case.expect = "invalid" if problems else "valid"
    case.offending = tuple(problems)
    return case


def call_imq_mmd(values, options):
    from ivae_ext.ops import imq_mmd

    return (imq_mmd(*values, options["scales"], options["per_dim"]),)


def reference_imq_mmd(values, options):
    from ivae_ext import reference

    scales = options["scales"]
    scales = tuple(scales.tolist()) if isinstance(scales, torch.Tensor) else tuple(scales)
    return (reference.imq_mmd(*values, scales, options["per_dim"]),)


def draw_selftest_crash(data):
    return Case(args=[], options={})


def call_selftest_crash(values, options):
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)  # what a kernel's out-of-bounds write does


def imq_mmd_output_rounding(case, outputs):
    """The kernel evaluates k = Σ_C C/(C + r) per pair in the input dtype (imq_mmd's docstring:
    float32 pairs are summed in float over a tile, then in double), and MMD² is a difference of
    three means of k: an error of a few eps·Σ_C C per dimension, however small MMD² is (found at
    10,000 examples: -9.5e-6 against -1.1e-5 for points ~1e-3 apart, Σ C = 17.6)."""
    scales = case.options["scales"]
    scales = scales.tolist() if isinstance(scales, torch.Tensor) else list(scales)
    dims = case.args[0].shape[1] if case.options["per_dim"] else 1
    eps = torch.finfo(dtype_of(case.args[0].dtype)).eps
    return (torch.tensor(8 * eps * sum(scales) * max(dims, 1), dtype=torch.float64),)


OPS = {
    "expfam_kl": OpSpec("expfam_kl", draw_expfam_kl, call_expfam_kl, reference_expfam_kl,
                        grad_rounding=expfam_kl_grad_rounding),
    "icnn_map": OpSpec("icnn_map", draw_icnn_map, call_icnn_map, reference_icnn_map,
                       beyond_range=icnn_beyond_dtype_range),
    # brenier_logdet is brenier_map_logdet's third output (the same kernel): fuzzed through the latter
    "brenier_map_logdet": OpSpec(
        "brenier_logdet", draw_brenier, call_brenier, reference_brenier,
        # log det of a d×d Cholesky factor: its error grows with d and the Hessian's conditioning,
        # which the perturbation slack measures; the fixed part is a little looser than elsewhere.
        rtol={"float64": 1e-8, "float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2},
        refusal_by_design=brenier_refusal_by_design, compare_mask=brenier_compare_mask,
        skip_grad=brenier_skip_grad, beyond_range=brenier_beyond_dtype_range,
        output_rounding=brenier_output_rounding, grad_rounding=brenier_grad_rounding),
    "stochastic_logdet_surrogate": OpSpec(
        "stochastic_logdet_surrogate", draw_surrogate, call_surrogate, reference_surrogate,
        rtol={"float64": 1e-8, "float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2},
        refusal_by_design=surrogate_refusal_by_design, compare_mask=surrogate_compare_mask,
        skip_grad=surrogate_skip_grad, beyond_range=brenier_beyond_dtype_range,
        output_rounding=surrogate_output_rounding, grad_rounding=surrogate_grad_rounding),
    "aggregate_log_q": OpSpec("aggregate_log_q", draw_aggregate_log_q, call_aggregate_log_q, reference_aggregate_log_q,
                              grad_rounding=aggregate_log_q_grad_rounding),
    "imq_mmd": OpSpec("imq_mmd", draw_imq_mmd, call_imq_mmd, reference_imq_mmd,
                      output_rounding=imq_mmd_output_rounding),
}

if os.environ.get("IVAE_FUZZ_SELFTEST") == "1":
    # an "op" that segfaults: tests/test_fuzz_ops.py checks that the runner counts it as a crash
    OPS["selftest_crash"] = OpSpec("selftest_crash", draw_selftest_crash, call_selftest_crash, None)

# ------------------------------------------------------------------------------------------------
# Checking one case


def compare(got, want, slack, dtype, spec, mask=None, lo=None, extra=None):
    """(None or a description of the mismatch, entries limited by the dtype's range): `got` must
    match `want` (float64) where `want` is finite. Not held against the op: a result that overflows
    (|want| beyond the dtype's range: ±inf, or NaN from inf - inf), and a non-finite result where
    the reference computed in the op's own dtype (`lo`) is non-finite too — an intermediate that
    exceeds the dtype's range (e.g. W·w ~ 1e60 in float32), counted as "range_limited". A finite
    result is always judged. `extra`: more allowed error (the reference's own rounding)."""
    if got is None or want is None:
        return (None if got is None and want is None else f"one output is None: got {type(got).__name__}"), 0
    if got.shape != want.shape:
        return f"shape {list(got.shape)}, reference {list(want.shape)}", 0
    g, w = got.detach().double().cpu(), want.detach().double()
    check = torch.isfinite(w)
    if mask is not None:
        check &= mask.cpu()
    if slack is not None:
        check &= torch.isfinite(slack)  # the reference itself is unstable right there: unjudgeable
    if not check.any():
        return None, 0
    rtol, atol = spec.rtol[dtype], spec.atol[dtype]
    allowed = atol + rtol * w.abs()
    if slack is not None:
        allowed = allowed + 50 * slack.where(torch.isfinite(slack), torch.zeros_like(slack))
    if extra is not None:
        allowed = allowed + extra
    err = (g - w).abs()
    finfo_max = torch.finfo(dtype_of(dtype)).max
    overflow = ~torch.isfinite(g) & ~((g.sign() != w.sign()) & torch.isinf(g)) & (w.abs() > finfo_max / 2)
    limited = torch.zeros_like(check)
    if lo is not None:
        limited = check & ~overflow & ~torch.isfinite(g) & ~torch.isfinite(lo.detach().double().cpu())
    bad = check & ~overflow & ~limited & ~(err <= allowed)
    if bad.any():
        i = bad.nonzero()[0].tolist()
        idx = tuple(i)
        return (f"{int(bad.sum())} of {int(check.sum())} entries differ, first at {i}: got {g[idx].item():.17g}, "
                f"reference {w[idx].item():.17g}, allowed error {allowed[idx].item():.3g}"), int(limited.sum())
    return None, int(limited.sum())


def _needs_lo(got, want):
    """Whether some result is non-finite where the float64 reference is finite."""
    return any(isinstance(g, torch.Tensor) and g.is_floating_point() and w is not None and g.shape == w.shape
               and (~torch.isfinite(g.detach().cpu()) & torch.isfinite(w)).any() for g, w in zip(got, want))


def perturbation_slack(spec, case, options, outs64, dtype, grads=False, weights=None):
    """|reference(x (1 + delta u)) - reference(x)| * eps/delta: the reference's sensitivity to the
    input dtype's rounding (a conditioning estimate), per output entry."""
    delta = 1e-6
    eps = torch.finfo(dtype_of(dtype)).eps
    values, leaves = materialize(case, "float64", requires_grad=grads, perturb=delta)
    with torch.enable_grad() if grads else torch.no_grad():
        outs = spec.reference(values, options)
        if grads:
            return [None if g is None else (g - g0).abs() * (eps / delta)
                    for g, g0 in zip(_grads(outs, leaves, weights), outs64)]
    return [None if o is None else (o.detach() - o0).abs() * (eps / delta) for o, o0 in zip(outs, outs64)]


def _grads(outputs, leaves, weights):
    loss = 0
    for o, wgt in zip(outputs, weights):
        if o is not None and wgt is not None and o.is_floating_point() and o.requires_grad:
            loss = loss + (o * wgt.to(o.dtype)).sum()
    if not isinstance(loss, torch.Tensor):
        return [torch.zeros_like(leaf) for leaf in leaves]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]


def run_case(spec, case):
    """The property for one case; returns (count key, detail, grad checked, grad mismatch detail)."""
    from ivae_ext.ops import use_reference_ops

    wants_grad = case.check_grad and case.expect != "invalid" and all(
        a.dtype in FLOATS for a in case.args if a.is_tensor)
    try:
        values, leaves = materialize(case, requires_grad=wants_grad)
    except Exception as error:  # building the inputs (not the op) failed: a bug of this table
        raise AssertionError(f"could not build the inputs of {case.describe()}: {error!r}") from error
    try:
        if case.reference_mode:
            with use_reference_ops():
                outputs = spec.call(values, case.options)
        else:
            outputs = spec.call(values, case.options)
    except (ValueError, TypeError, RuntimeError) as error:
        message = str(error)
        if not names_clearly(message, spec.name, case.offending if case.expect == "invalid" else ()):
            return "unnamed_errors", f"{type(error).__name__}: {message[:300]}", False, None, 0
        if case.expect == "valid":
            values64 = materialize(case, "float64")[0]
            if spec.refusal_by_design is not None and spec.refusal_by_design(case, message, values64):
                return "clear_errors", "", False, None, 0
            return "refused_valid_input", f"{type(error).__name__}: {message[:300]}", False, None, 0
        return "clear_errors", "", False, None, 0
    except Exception as error:  # any other exception type is not a clear error
        return "unnamed_errors", f"{type(error).__name__}: {str(error)[:300]}", False, None, 0
    if case.expect == "invalid":
        return "accepted_bad_input", f"returned instead of refusing {case.offending}", False, None, 0
    dtype = next(a.dtype for a in case.args if a.is_tensor)
    if spec.beyond_range is not None and spec.beyond_range(case):
        return "valid_matches", "", False, None, 1
    with torch.no_grad():
        values64 = materialize(case, "float64")[0]
        want = spec.reference(values64, case.options)
    mask = spec.compare_mask(case, outputs) if spec.compare_mask else None
    slack = perturbation_slack(spec, case, case.options, want, dtype)
    lo = [None] * len(want)
    if _needs_lo(outputs, want):
        lo = spec.reference(materialize(case)[0], case.options)  # the reference in the op's dtype
    limited = 0
    extra = spec.output_rounding(case, outputs) if spec.output_rounding else [None] * len(want)
    for i, (got, w) in enumerate(zip(outputs, want)):
        if w is None and got is not None and not got.is_floating_point():
            continue  # an integer status output: no reference value
        if isinstance(got, torch.Tensor) and got.dtype != dtype_of(dtype) and got.is_floating_point():
            return "silent_wrong", f"output {i} has dtype {got.dtype}, inputs {dtype}", False, None, 0
        problem, n = compare(got, w, slack[i], dtype, spec, None if mask is None else mask[i], lo[i], extra[i])
        limited += n
        if problem:
            return "silent_wrong", f"output {i}: {problem}", False, None, limited
    if not wants_grad or (spec.skip_grad and spec.skip_grad(case, outputs)):
        return "valid_matches", "", False, None, limited
    if _needs_lo(outputs, want):
        # an output overflowed its dtype (allowed above): gradients through it (e.g. softmax weights
        # recomputed from a -inf log q) are not defined in that dtype
        return "valid_matches", "", False, None, limited
    # gradients of a fixed random projection of the outputs
    gen = torch.Generator().manual_seed(7)
    weights = [torch.randn(o.shape, generator=gen, dtype=torch.float64) if o is not None and o.is_floating_point()
               else None for o in outputs]
    try:
        got_grads = _grads(outputs, leaves, weights)
    except (ValueError, TypeError, RuntimeError) as error:
        return "valid_matches", "", True, f"backward raised {type(error).__name__}: {str(error)[:300]}", limited
    values64, leaves64 = materialize(case, "float64", requires_grad=True)
    with torch.enable_grad():
        want_grads = _grads(spec.reference(values64, case.options), leaves64, weights)
    grad_slack = perturbation_slack(spec, case, case.options, want_grads, dtype, grads=True, weights=weights)
    extra = spec.grad_rounding(case, weights, want_grads) if spec.grad_rounding else [None] * len(leaves)
    lo_grads = [None] * len(leaves)
    if _needs_lo(got_grads, want_grads):
        values_lo, leaves_lo = materialize(case, requires_grad=True)
        with torch.enable_grad():
            lo_grads = _grads(spec.reference(values_lo, case.options), leaves_lo, weights)
    names = [a.name for a in case.args if a.is_tensor and a.dtype in FLOATS]
    for name, g, w, s, e, lo_g in zip(names, got_grads, want_grads, grad_slack, extra, lo_grads):
        problem, n = compare(g, w, s, dtype, spec, lo=lo_g, extra=e)
        limited += n
        if problem:
            return "valid_matches", "", True, f"gradient of {name}: {problem}", limited
    return "valid_matches", "", True, None, limited


# ------------------------------------------------------------------------------------------------
# The worker (child process) and the parent


def worker(ops, examples, seed, progress_path, failures_shown, save_dir=None):
    _imports()
    torch.set_num_threads(1)
    import warnings

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    warnings.filterwarnings("ignore")
    importlib.import_module("ivae_ext")  # loads the compiled ops before the first example

    for name in ops:
        spec = OPS[name]
        counts = {k: 0 for k in COUNT_KEYS}
        failures = []
        started = time.perf_counter()

        def record(key, detail, case):
            if key in FAILURE_KEYS and len(failures) < failures_shown:
                failures.append({"kind": key, "detail": detail, "case": case.describe()})
                if save_dir:  # torch.load(path, weights_only=False) and run_case(OPS[op], case) to replay
                    os.makedirs(save_dir, exist_ok=True)
                    torch.save({"op": name, "case": case}, os.path.join(save_dir, f"{name}-{len(failures)}.pt"))

        @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate], print_blob=False)
        @given(st.data())
        def fuzz(data):
            case = spec.draw(data)
            with open(progress_path, "w") as f:
                f.write(json.dumps({"op": name, "case": case.describe()}))
            counts["calls"] += 1
            counts["drawn_invalid"] += case.expect == "invalid"
            key, detail, grad_checked, grad_problem, limited = run_case(spec, case)
            if key == "valid_matches" and limited:
                key = "range_limited"  # returned; some entries beyond the dtype's range were not judged
            counts[key] += 1
            record(key, detail, case)
            if grad_checked:
                counts["grad_checks"] += 1
                if grad_problem:
                    counts["grad_mismatches"] += 1
                    record("grad_mismatches", grad_problem, case)

        if seed is not None:
            fuzz = hypothesis_seed(seed)(fuzz)
        fuzz()
        result = {"op": name, "counts": counts, "failures": failures,
                  "seconds": round(time.perf_counter() - started, 1)}
        print(RESULT_PREFIX + json.dumps(result), flush=True)
    if os.path.exists(progress_path):
        os.unlink(progress_path)


def run(ops, examples, seed, failures_shown, timeout, save_dir=None):
    """Runs the worker in child processes, restarting after a crash; returns {op: result}."""
    import tempfile

    results = {}
    remaining = list(ops)
    progress = os.path.join(tempfile.mkdtemp(prefix="ivae_fuzz_"), "progress.json")
    root = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    path = os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    # the package of this checkout is fuzzed, whatever a .pth in the environment points at
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=path)
    while remaining:
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--examples", str(examples),
                   "--progress", progress, "--failures-shown", str(failures_shown), "--ops", *remaining]
        if seed is not None:
            command += ["--seed", str(seed)]
        if save_dir:
            command += ["--save-failures", save_dir]
        if os.path.exists(progress):
            os.unlink(progress)
        try:
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                  timeout=timeout)
            stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as error:
            stdout = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
            stderr, code = "timeout", "timeout"
        for line in stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
                results[result["op"]] = result
                remaining.remove(result["op"])
        if code == 0 and not remaining:
            break
        if code == 0:
            raise RuntimeError(f"fuzz worker exited without results for {remaining}")
        # the worker died (a crash, an uncaught exception, a timeout): charge it to the op it was on
        where = {}
        if os.path.exists(progress):
            with open(progress) as f:
                where = json.loads(f.read() or "{}")
        op = where.get("op", remaining[0])
        signal = f"signal {-code}" if isinstance(code, int) and code < 0 else f"exit status {code}"
        counts = {k: 0 for k in COUNT_KEYS}
        counts["crashes"] = 1
        results[op] = {"op": op, "counts": counts, "seconds": None, "failures": [
            {"kind": "crashes", "detail": f"the worker died ({signal}): {stderr.strip()[-1500:]}",
             "case": where.get("case", "?")}]}
        remaining.remove(op)
    return results


def report(results, examples):
    widths = [len(k) + 2 for k in COUNT_KEYS]
    lines = [f"{'op':20s}" + "".join(f"{k:>{n}s}" for k, n in zip(COUNT_KEYS, widths))]
    for op, result in results.items():
        lines.append(f"{op:20s}" + "".join(f"{result['counts'][k]:>{n}d}" for k, n in zip(COUNT_KEYS, widths)))
    print("\n".join(lines))
    for op, result in results.items():
        for failure in result["failures"]:
            print(f"\n[{op}] {failure['kind']}: {failure['detail']}\n    case: {failure['case']}")
    totals = {k: sum(r["counts"][k] for r in results.values()) for k in COUNT_KEYS}
    failed = sum(totals[k] for k in FAILURE_KEYS)
    print(f"\n{SUMMARY_PREFIX} ops={len(results)} examples_per_op={examples} calls={totals['calls']} "
          f"valid_matches={totals['valid_matches']} clear_errors={totals['clear_errors']} "
          f"grad_checks={totals['grad_checks']} crashes={totals['crashes']} failures={failed}")
    return totals, failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100, help="hypothesis examples per op")
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    parser.add_argument("--seed", type=int, default=None,
                        help="a hypothesis seed (default: derandomized, the same examples every run)")
    parser.add_argument("--json", default=None, help="write the per-op counts here (atomically)")
    parser.add_argument("--failures-shown", type=int, default=5, help="failing examples kept per op")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before a worker counts as hung")
    parser.add_argument("--save-failures", default=None, help="directory for the failing cases (torch.save)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--progress", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.ops, args.examples, args.seed, args.progress, args.failures_shown, args.save_failures)
        return 0
    started = time.perf_counter()
    results = run(args.ops, args.examples, args.seed, args.failures_shown, args.timeout, args.save_failures)
    totals, failed = report(results, args.examples)
    if args.json:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
        from ivae_ext.experiments.common import write_json

        write_json(args.json, {"examples_per_op": args.examples, "seed": args.seed,
                               "seconds": round(time.perf_counter() - started, 1), "totals": totals,
                               "failures": failed, "ops": results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
