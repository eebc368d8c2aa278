"""pytest-benchmark: eager and compiled references vs fused aggregate_log_q, one group per case.

Run: make bench   (or: python -m pytest benchmarks/bench_aggregate_log_q.py -o python_files='bench_*.py'
--benchmark-only --benchmark-group-by=group)
"""

import pytest

from aggregate_log_q_cases import MODES, SIZES, implementations, make_inputs, step

IMPLEMENTATIONS = implementations()


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"B{s[0]}-N{s[1]}-d{s[2]}")
def test_aggregate_log_q(benchmark, size, mode, impl):
    batch, comps, dim = size
    benchmark.group = f"aggregate_log_q B={batch} N={comps} d={dim} {mode}"
    run = step(IMPLEMENTATIONS[impl], make_inputs(batch, comps, dim, mode != "forward"), mode)
    rounds = 3 if impl == "reference (eager)" and batch >= 1024 else 10
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
