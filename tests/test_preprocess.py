"""Linear preprocessing of x: whitening, standardisation, their inverses and their errors."""

import numpy as np
import pytest

from ivae_ext.data.preprocess import fit_preprocessing


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(500, 3)) @ np.array([[2.0, 0.3, 0.0], [0.0, 0.05, 0.01], [1.0, 0.0, 0.5]]) + 3.0


def test_whitening_gives_unit_covariance_and_inverts():
    x = _data()
    pre = fit_preprocessing(x, "whiten")
    y = pre(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(y.T), np.eye(3), atol=1e-4)
    np.testing.assert_allclose(pre.inverse(y), x, rtol=1e-5, atol=1e-5)


def test_standardize_gives_unit_variances_and_none_is_the_identity():
    x = _data()
    y = fit_preprocessing(x, "standardize")(x)
    np.testing.assert_allclose(y.std(0), 1, atol=1e-3)
    np.testing.assert_allclose(fit_preprocessing(x, "none")(x), x.astype(np.float32))


def test_singular_or_constant_data_is_an_error_not_a_blow_up():
    x = _data()
    singular = np.concatenate([x, x[:, :1] + x[:, 1:2]], axis=1)
    with pytest.raises(ValueError, match="cannot whiten x: its covariance is singular"):
        fit_preprocessing(singular, "whiten")
    constant = x.copy()
    constant[:, 1] = 4.0
    with pytest.raises(ValueError, match="cannot standardize x: dimension 1 has variance 0"):
        fit_preprocessing(constant, "standardize")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="preprocess must be one of"):
        fit_preprocessing(_data(), "pca")
    with pytest.raises(ValueError, match=r"x must be \[N, D\] with N >= 2"):
        fit_preprocessing(np.zeros(5), "whiten")
