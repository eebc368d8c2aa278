"""MCC: 1 for permuted, rescaled sources; low for independent noise."""

import numpy as np
import pytest
import torch

from ivae_ext.metrics import mcc


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_mcc_is_one_for_permuted_rescaled_sources(method):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2000, 4))
    perm = np.array([2, 0, 3, 1])
    z = s[:, perm] * np.array([3.0, -0.5, 2.0, -7.0]) + 1.0
    score, matching = mcc(z, s, method)
    assert score == pytest.approx(1.0, abs=1e-9)
    # matching[j] is the z column holding source j
    assert np.array_equal(perm[matching], np.arange(4))


def test_spearman_sees_through_monotone_distortion():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(2000, 3))
    z = np.exp(2 * s)
    assert mcc(z, s, "spearman")[0] == pytest.approx(1.0, abs=1e-9)
    assert mcc(z, s, "pearson")[0] < 0.9


def test_mcc_is_low_for_independent_noise():
    rng = np.random.default_rng(2)
    score, _ = mcc(rng.normal(size=(5000, 5)), rng.normal(size=(5000, 5)))
    assert score < 0.1


def test_mcc_accepts_tensors_and_rejects_bad_shapes():
    s = torch.randn(100, 2)
    assert mcc(s, s)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number of rows"):
        mcc(s, s[:50])
    with pytest.raises(ValueError, match="method"):
        mcc(s, s, "kendall")
