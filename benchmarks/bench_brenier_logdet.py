"""pytest-benchmark: references vs fused brenier_logdet, forward and forward+backward per case.

Run: make bench
"""

import pytest

from brenier_logdet_cases import SIZES, backward_implementations, forward_backward, forward_implementations, forward_only
from icnn_map_cases import make_inputs

FORWARD = forward_implementations()
BACKWARD = backward_implementations()
CASE_ID = "B{}-d{}-H{}-K{}".format


@pytest.mark.parametrize("impl", list(FORWARD))
@pytest.mark.parametrize("size", SIZES[:2], ids=lambda s: CASE_ID(*s))
def test_brenier_logdet_forward(benchmark, size, impl):
    benchmark.group = "brenier_logdet B={} d={} H={} K={} forward".format(*size)
    benchmark.pedantic(forward_only(FORWARD[impl], make_inputs(*size)), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("impl", list(BACKWARD))
@pytest.mark.parametrize("size", SIZES[:2], ids=lambda s: CASE_ID(*s))
def test_brenier_logdet_forward_backward(benchmark, size, impl):
    benchmark.group = "brenier_logdet B={} d={} H={} K={} forward+backward".format(*size)
    benchmark.pedantic(forward_backward(BACKWARD[impl], make_inputs(*size)), rounds=5, warmup_rounds=1)
