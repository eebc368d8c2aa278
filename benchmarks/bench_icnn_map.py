"""pytest-benchmark: reference (double backprop) vs fused icnn_map, a training step per case.

Run: make bench
"""

import pytest

from icnn_map_cases import SIZES, implementations, make_inputs, training_step

IMPLEMENTATIONS = implementations()


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "B{}-d{}-H{}-K{}".format(*s))
def test_icnn_map_training_step(benchmark, size, impl):
    benchmark.group = "icnn_map B={} d={} H={} K={} forward+backward".format(*size)
    benchmark.pedantic(training_step(IMPLEMENTATIONS[impl], make_inputs(*size)), rounds=10, warmup_rounds=2)
