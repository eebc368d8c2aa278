"""The nonlinear ICA generator and the .npz loader."""

import numpy as np
import pytest

from ivae_ext.data import DataFormatError, load_npz, make_nonlinear_ica

SMALL = dict(n_sources=3, n_segments=4, per_segment=50, mixing_layers=2)


def test_generator_shapes_and_dtypes():
    d = make_nonlinear_ica(**SMALL, seed=0)
    assert d.x.shape == (200, 3) and d.s.shape == (200, 3) and d.u.shape == (200, 4)
    assert d.x.dtype == np.float32 and d.s.dtype == np.float32
    assert np.array_equal(d.u.sum(1), np.ones(200)), "u must be one-hot"
    assert np.array_equal(d.u.argmax(1), d.labels)
    assert len(d.mixing) == 2


def test_generator_is_deterministic_in_the_seed():
    a = make_nonlinear_ica(**SMALL, seed=7)
    b = make_nonlinear_ica(**SMALL, seed=7)
    c = make_nonlinear_ica(**SMALL, seed=8)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.s, b.s)
    assert not np.allclose(a.x, c.x)


def test_sources_are_conditioned_on_the_segment():
    d = make_nonlinear_ica(n_sources=2, n_segments=3, per_segment=4000, seed=1, segment_means=True)
    for m in range(3):
        seg = d.s[d.labels == m]
        np.testing.assert_allclose(seg.std(0), d.scales[m], rtol=0.08, err_msg=f"segment {m} scale")
        np.testing.assert_allclose(seg.mean(0), d.means[m], atol=0.15, err_msg=f"segment {m} mean")


def test_laplace_sources_have_heavier_tails():
    g = make_nonlinear_ica(n_sources=2, n_segments=1, per_segment=20000, seed=0, source_dist="gauss")
    lap = make_nonlinear_ica(n_sources=2, n_segments=1, per_segment=20000, seed=0, source_dist="laplace")

    def kurt(s):
        z = (s - s.mean(0)) / s.std(0)
        return (z**4).mean(0)

    assert np.all(kurt(lap.s) > 5.0) and np.all(np.abs(kurt(g.s) - 3.0) < 0.3)


def test_mixing_matrices_are_well_conditioned_and_distinct_unless_reused():
    d = make_nonlinear_ica(**SMALL, seed=3)
    assert not np.allclose(d.mixing[0], d.mixing[1])
    assert all(np.linalg.cond(a) < 10 for a in d.mixing)
    r = make_nonlinear_ica(**SMALL, seed=3, reuse_matrix=True)
    assert np.array_equal(r.mixing[0], r.mixing[1])


def test_mixing_is_nonlinear():
    d = make_nonlinear_ica(n_sources=3, n_segments=2, per_segment=500, mixing_layers=3, seed=0)
    coef, *_ = np.linalg.lstsq(np.c_[d.s, np.ones(len(d.s))], d.x, rcond=None)
    resid = d.x - np.c_[d.s, np.ones(len(d.s))] @ coef
    assert resid.var() > 1e-3 * d.x.var()


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError, match="activation"):
        make_nonlinear_ica(**SMALL, activation="relu6")


def _save(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_loader_reads_labels_as_one_hot(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 2))
    path = _save(tmp_path, x=x, u=np.array([3, 3, 5, 5, 7, 7]), s=x[:, :1])
    d = load_npz(path)
    assert d.x.shape == (6, 2) and d.u.shape == (6, 3) and d.s.shape == (6, 1)
    assert np.array_equal(d.u.argmax(1), [0, 0, 1, 1, 2, 2])


def test_npz_missing_key_is_named(tmp_path):
    path = _save(tmp_path, x=np.zeros((4, 2)))
    with pytest.raises(DataFormatError, match="missing required array 'u'"):
        load_npz(path)


def test_npz_mismatched_lengths_are_reported(tmp_path):
    path = _save(tmp_path, x=np.zeros((4, 2)), u=np.zeros(5))
    with pytest.raises(DataFormatError, match="x has 4, u has 5"):
        load_npz(path)


def test_npz_nan_rows_are_reported(tmp_path):
    x = np.zeros((5, 2))
    x[3, 1] = np.nan
    path = _save(tmp_path, x=x, u=np.zeros(5))
    with pytest.raises(DataFormatError, match=r"'x' has 1 row\(s\) with NaN.*rows 3"):
        load_npz(path)


def test_npz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_npz(str(tmp_path / "nope.npz"))
