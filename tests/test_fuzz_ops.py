"""Hostile-input fuzzing of every fused op (tests/fuzz_ops.py), a fixed small number of
derandomized examples per op: the same examples on every run. ``make fuzz`` runs 10,000 per op."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import ivae_ext

pytestmark = pytest.mark.skipif(not ivae_ext.HAS_EXTENSION, reason="compiled extension required")

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_ops.py")
EXAMPLES = 150  # per op: about 13 s on one thread (the test file about 20 s)
SUMMARY = re.compile(r"fuzz summary: ops=(\d+) examples_per_op=(\d+) calls=(\d+) .* crashes=(\d+) failures=(\d+)")


def run_fuzzer(*args, env=None):
    return subprocess.run([sys.executable, RUNNER, *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def test_every_op_refuses_clearly_or_matches_the_reference_on_hostile_input():
    proc = run_fuzzer("--examples", str(EXAMPLES))
    match = SUMMARY.search(proc.stdout)
    assert match, f"no summary line (exit status {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ops, examples, calls, crashes, failures = map(int, match.groups())
    assert proc.returncode == 0 and crashes == 0 and failures == 0, proc.stdout[-6000:]
    assert ops == 6 and examples == EXAMPLES and calls == ops * EXAMPLES, proc.stdout[-3000:]


def test_a_crashing_op_is_counted_and_fails_the_run():
    """A segfault in the op under test must not end the run silently nor pass: the runner charges
    it to that op (with the example) and exits non-zero."""
    proc = run_fuzzer("--examples", "3", "--ops", "selftest_crash", env={"IVAE_FUZZ_SELFTEST": "1"})
    match = SUMMARY.search(proc.stdout)
    assert match, f"no summary line (exit status {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert int(match.group(4)) == 1 and proc.returncode == 1, proc.stdout[-3000:]
    assert "signal 11" in proc.stdout, proc.stdout[-3000:]
