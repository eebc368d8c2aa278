"""pytest-benchmark: a convex-potential-flow training step (forward + backward to x and every ICNN
parameter) through CP-Flow-style estimators (autograd HVPs + CG: as its code, and lean), the exact
brenier_map_logdet and the fused stochastic surrogate, on Hessians of median condition 5.
The ratios with their spread: benchmarks/flow_logdet_step.py.

Run: make bench
"""

import pytest
import torch

from flow_logdet_step import SIZES, cpflow_step, exact_step, make_weights, stochastic_step
from ivae_ext.ops.logdet_surrogate import rademacher_probes

CASE_ID = "B{}-d{}-H{}-K{}".format
STEPS = {
    "cpflow": lambda x, params, probes: cpflow_step(x, params, probes, 1e-3),
    "cpflow_lean": lambda x, params, probes: cpflow_step(x, params, probes, 1e-3, faithful=False),
    "exact": lambda x, params, probes: exact_step(x, params),
    "stochastic": lambda x, params, probes: stochastic_step(x, params, probes, 1e-3),
}


@pytest.mark.parametrize("impl", list(STEPS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: CASE_ID(*s))
def test_flow_training_step(benchmark, size, impl):
    (x, *params), _ = make_weights(*size)
    params = [p.requires_grad_() for p in params]
    probes = rademacher_probes(1, size[0], size[1], x, torch.Generator().manual_seed(1))
    benchmark.group = "flow training step B={} d={} H={} K={}".format(*size)
    benchmark.pedantic(lambda: STEPS[impl](x, params, probes), rounds=5, warmup_rounds=1)
