"""pytest-benchmark: eager and compiled references vs fused imq_mmd, one group per case.

Run: make bench   (or: python -m pytest benchmarks/bench_imq_mmd.py -o python_files='bench_*.py'
--benchmark-only --benchmark-group-by=group)
"""

import pytest

from imq_mmd_cases import MODES, SIZES, implementations, make_inputs, step

IMPLEMENTATIONS = {per_dim: implementations(per_dim) for per_dim in (True, False)}
CASES = [(size, impl) for size in SIZES for impl in IMPLEMENTATIONS[size[2]]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size, impl", CASES, ids=lambda v: v if isinstance(v, str) else
                         "B{}-D{}-{}".format(v[0], v[1], "per_dim" if v[2] else "joint"))
def test_imq_mmd(benchmark, size, impl, mode):
    batch, dim, per_dim = size
    benchmark.group = f"imq_mmd B={batch} D={dim} {'per_dim' if per_dim else 'joint'} {mode}"
    run = step(IMPLEMENTATIONS[per_dim][impl], make_inputs(batch, dim, mode != "forward"), mode)
    rounds = 3 if impl == "reference (eager)" and batch >= 500 else 10
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
