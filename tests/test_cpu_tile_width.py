"""The CPU tiles' two widths (cpu/tile_gemm.h): 256-byte rows where AVX-512's 32 registers hold
them, 64-byte rows elsewhere. A machine runs only one of them, so each is forced here in a
subprocess (IVAE_CPU_TILE_WIDTH is read once per process) and checked against the references in
float64: icnn_map, brenier_map_logdet and the stochastic surrogate, forward and backward."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ivae_ext.ops.brenier_logdet import HAS_FUSED_LOGDET

pytestmark = pytest.mark.skipif(not HAS_FUSED_LOGDET, reason="compiled op required")

TESTS = Path(__file__).resolve().parent

CHECK = textwrap.dedent(
    """
    import torch
    from ivae_ext import reference
    from ivae_ext.ops import brenier_map_logdet, icnn_map
    from ivae_ext.ops import logdet_surrogate
    from helpers import icnn_inputs

    def grads(outputs, inputs):
        gen = torch.Generator().manual_seed(1)
        loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outputs)
        return [torch.zeros_like(t) if g is None else g
                for g, t in zip(torch.autograd.grad(loss, inputs, allow_unused=True), inputs)]

    def close(got, want, what):
        for i, (g, w) in enumerate(zip(got, want)):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9, msg=lambda m: f"{what}[{i}]: {m}")

    # H = 70: every tile width of both widths; d = 9: padded columns; 61 rows: row tails.
    inputs = icnn_inputs(61, 9, 70, 3)
    close(icnn_map(*inputs), reference.icnn_map(*inputs), "icnn_map")
    close(grads(icnn_map(*inputs), inputs), grads(reference.icnn_map(*inputs), inputs), "icnn_map grads")
    fused = brenier_map_logdet(*inputs)
    want = (*reference.icnn_map(*inputs), reference.brenier_logdet(*inputs))
    close(fused, want, "brenier_map_logdet")
    close(grads(fused, inputs), grads(want, inputs), "brenier_map_logdet grads")
    probes = torch.randn(1, 61, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64).sign()
    surrogate = logdet_surrogate._brenier_surrogate(*inputs, probes, 1e-13, 90)[2]  # the tiled CG (H <= 128)
    surrogate_want = reference.stochastic_logdet_surrogate(*inputs, probes, 1e-13, 90)[0]
    close([surrogate], [surrogate_want], "surrogate")
    close(grads([surrogate], inputs), grads([surrogate_want], inputs), "surrogate grads")
    print("ok")
    """
)


@pytest.mark.parametrize("width", ["wide", "narrow"])
def test_each_tile_width_matches_the_references(width):
    env = dict(os.environ, IVAE_CPU_TILE_WIDTH=width, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
