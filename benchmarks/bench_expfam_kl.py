"""pytest-benchmark: reference (eager / torch.compile), compiled textbook formula and fused expfam_kl, one group per case.

Run: make bench   (or: python -m pytest benchmarks/bench_expfam_kl.py --benchmark-group-by=group)
"""

import pytest

from expfam_kl_cases import MODES, SIZES, implementations, make_inputs, step

IMPLEMENTATIONS = implementations()


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"B{s[0]}-d{s[1]}")
def test_expfam_kl(benchmark, size, mode, impl):
    batch, dim = size
    benchmark.group = f"expfam_kl B={batch} d={dim} {mode}"
    run = step(IMPLEMENTATIONS[impl], make_inputs(batch, dim, mode != "forward"), mode)
    benchmark.pedantic(run, rounds=20, warmup_rounds=3)
