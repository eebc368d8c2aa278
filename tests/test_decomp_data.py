"""Decomposition-VAE data: the pinwheel generator, procedural sprites, the dSprites and labelled
.npz loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ivae_ext.data import DataFormatError, load_dsprites_npz, load_labelled_npz, make_pinwheel, make_sprites, render_sprites
from ivae_ext.data.pinwheel import pinwheel, pinwheel_arm_means
from ivae_ext.data.sprites import FACTOR_SIZES, factor_values

# ------------------------------------------------------------------ pinwheel


def test_pinwheel_is_deterministic_per_seed_and_splits_are_independent_streams():
    a, b, c = make_pinwheel(seed=3), make_pinwheel(seed=3), make_pinwheel(seed=4)
    torch.testing.assert_close(a.x_train, b.x_train)
    torch.testing.assert_close(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_train, a.x_test)
    torch.testing.assert_close(make_pinwheel(n_test=40, seed=3).x_train, a.x_train)  # test size leaves train alone


def test_pinwheel_shapes_and_balanced_arms():
    d = make_pinwheel(n_train=402, n_val=8, n_test=400, arms=4)
    assert d.x_train.shape == (402, 2) and d.x_train.dtype == torch.float32
    assert d.y_train.dtype == torch.int64 and d.features_train.shape == (402, 2)
    assert d.y_train.bincount().tolist() == [101, 101, 100, 100]
    assert d.y_test.bincount().tolist() == [100] * 4
    assert make_pinwheel(arms=5, n_train=50).y_train.bincount().tolist() == [10] * 5


def test_pinwheel_statistics_match_the_anchor_construction():
    d = make_pinwheel(n_train=20000, seed=0)
    f, y, x = d.features_train.double(), d.y_train, d.x_train.double()
    torch.testing.assert_close(f.mean(0), torch.tensor([1.0, 0.0], dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(f.std(0), torch.tensor([0.3, 0.1], dtype=torch.float64), atol=0.01, rtol=0)
    # x is the row vector f times [[cos, -sin], [sin, cos]] at angle 2πk/4 + 0.25·exp(f_1)
    theta = 2 * torch.pi * y.double() / 4 + 0.25 * f[:, 0].exp()
    rot = torch.stack([torch.stack([theta.cos(), -theta.sin()], -1), torch.stack([theta.sin(), theta.cos()], -1)], -2)
    torch.testing.assert_close(x, torch.einsum("ni,nij->nj", f, rot), atol=1e-5, rtol=0)
    # the radius spreads by ~ the radial std, and the arms point in four different directions
    assert abs(x.norm(dim=1).std() - 0.3) < 0.03
    mean_dirs = torch.stack([x[y == k].mean(0) for k in range(4)])
    angles = torch.atan2(mean_dirs[:, 1], mean_dirs[:, 0])
    gaps = torch.remainder(angles - angles.roll(1), 2 * torch.pi)
    torch.testing.assert_close(gaps, torch.full((4,), 2 * torch.pi / 4 * 3, dtype=torch.float64), atol=0.05, rtol=0)


def test_pinwheel_arm_means_sit_on_their_own_arms():
    d = make_pinwheel(n_train=4000, seed=1)
    means = pinwheel_arm_means(4, 0.25)
    torch.testing.assert_close(means.norm(dim=1), torch.ones(4))
    nearest = torch.cdist(d.x_train, means).argmin(1)
    assert (nearest == d.y_train).float().mean() > 0.9


@pytest.mark.parametrize(
    "kwargs, name",
    [({"n_train": 0}, "n_train"), ({"arms": 0}, "arms"), ({"radial_std": -0.1}, "radial_std"),
     ({"tangential_std": float("nan")}, "tangential_std"), ({"rate": "fast"}, "rate")],
)
def test_pinwheel_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_pinwheel(**kwargs)


def test_pinwheel_low_level_function_with_zero_points():
    x, y, f = pinwheel(0, np.random.default_rng(0))
    assert x.shape == (0, 2) and y.shape == (0,) and f.shape == (0, 2)


# ------------------------------------------------------------------ sprites


def _one(shape=0, scale=5, orientation=0, pos_x=16, pos_y=16, size=32):
    return render_sprites(np.array([[shape, scale, orientation, pos_x, pos_y]]), size)[0, 0]


def _centroid(img):
    rows, cols = torch.nonzero(img, as_tuple=True)
    return cols.float().mean().item(), rows.float().mean().item()


def test_sprites_are_binary_with_factors_and_deterministic():
    a, b = make_sprites(n=300, seed=1), make_sprites(n=300, seed=1)
    assert a.images.shape == (300, 1, 32, 32) and a.images.dtype == torch.float32
    assert set(a.images.unique().tolist()) <= {0.0, 1.0}
    assert a.factors.shape == (300, 5) and a.factors.dtype == torch.int64 and a.values.shape == (300, 5)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    assert not torch.equal(a.factors, make_sprites(n=300, seed=2).factors)
    assert (a.images.flatten(1).sum(1) > 0).all(), "every sprite must be visible"
    assert (a.factors.max(0).values < torch.tensor(FACTOR_SIZES)).all()
    torch.testing.assert_close(a.values, torch.as_tensor(factor_values(a.factors.numpy()), dtype=torch.float32))


def test_sprite_position_factors_move_the_centroid():
    xs = [_centroid(_one(pos_x=p))[0] for p in (0, 10, 20, 31)]
    ys = [_centroid(_one(pos_y=p))[1] for p in (0, 10, 20, 31)]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 15, f"pos_x must move the sprite right: {xs}"
    assert ys == sorted(ys) and ys[-1] - ys[0] > 15, f"pos_y must move the sprite down: {ys}"
    assert abs(_centroid(_one(pos_x=0))[1] - _centroid(_one(pos_x=31))[1]) < 1.0


def test_sprite_scale_changes_the_pixel_count_and_shapes_differ():
    for shape in range(3):
        counts = [_one(shape=shape, scale=s, size=64).sum().item() for s in range(6)]
        assert counts == sorted(counts) and counts[-1] > 3 * counts[0], f"shape {shape}: {counts}"
    images = [_one(shape=s, size=64) for s in range(3)]
    assert all(not torch.equal(images[i], images[j]) for i in range(3) for j in range(i + 1, 3))


def test_sprite_rotation_turns_the_ellipse():
    flat, upright = _one(shape=1, orientation=0, size=64), _one(shape=1, orientation=10, size=64)  # 0 and π/2
    assert torch.nonzero(flat)[:, 1].float().std() > 1.5 * torch.nonzero(flat)[:, 0].float().std()
    assert torch.nonzero(upright)[:, 0].float().std() > 1.5 * torch.nonzero(upright)[:, 1].float().std()


def test_procedural_sampler_fixes_one_factor():
    data = make_sprites(n=10, seed=0)
    x = data.sample_fixed_factor(3, 50, np.random.default_rng(0))  # pos_x fixed
    assert x.shape == (50, 1, 32, 32)
    cols = torch.stack([torch.nonzero(img[0])[:, 1].float().mean() for img in x])
    rows = torch.stack([torch.nonzero(img[0])[:, 0].float().mean() for img in x])
    assert cols.std() < 1.5 < rows.std()


@pytest.mark.parametrize("kwargs, name", [({"n": 0}, "n"), ({"size": 4}, "size")])
def test_sprites_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_sprites(**kwargs)


def test_render_rejects_bad_factors():
    with pytest.raises(ValueError, match="out of range"):
        render_sprites(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="factors"):
        render_sprites(np.zeros((2, 4), dtype=np.int64))


# ------------------------------------------------------------------ dSprites .npz


def _fake_dsprites(path, n=48, **overrides):
    rng = np.random.default_rng(0)
    classes = np.stack([np.zeros(n, int)] + [rng.integers(0, k, n) for k in FACTOR_SIZES], axis=1)
    values = np.concatenate([np.ones((n, 1)), factor_values(classes[:, 1:])], axis=1)
    imgs = render_sprites(classes[:, 1:], 64)[:, 0].numpy().astype(np.uint8)
    arrays = {"imgs": imgs, "latents_classes": classes, "latents_values": values, **overrides}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return classes


def test_load_dsprites_npz_drops_colour_and_subsamples(tmp_path):
    path = tmp_path / "dsprites.npz"
    classes = _fake_dsprites(path)
    data = load_dsprites_npz(str(path))
    assert data.images.shape == (48, 1, 64, 64) and data.images.dtype == torch.float32
    assert torch.equal(data.factors, torch.as_tensor(classes[:, 1:]))
    assert not data.procedural and data.values.shape == (48, 5)
    sub = load_dsprites_npz(str(path), n=10, seed=1, dtype=torch.uint8)
    assert sub.images.shape == (10, 1, 64, 64) and sub.images.dtype == torch.uint8
    x = data.sample_fixed_factor(0, 20, np.random.default_rng(0))
    assert x.shape == (20, 1, 64, 64)


@pytest.mark.parametrize(
    "overrides, match",
    [({"imgs": None}, "imgs"), ({"latents_classes": np.zeros((48, 5), int)}, "latents_classes"),
     ({"imgs": np.full((48, 64, 64), 3, np.uint8)}, "binary"), ({"latents_values": np.full((48, 6), np.nan)}, "latents_values")],
)
def test_load_dsprites_npz_errors_name_the_key(tmp_path, overrides, match):
    path = tmp_path / "bad.npz"
    _fake_dsprites(path, **overrides)
    with pytest.raises(DataFormatError, match=match):
        load_dsprites_npz(str(path))


def test_load_dsprites_npz_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dsprites"):
        load_dsprites_npz(str(tmp_path / "nope.npz"))


# ------------------------------------------------------------------ labelled .npz


def test_labelled_npz_reads_x_labels_and_factors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.rand(6, 3), labels=np.array([0, 1, 2, 0, 1, 2.0]), factors=np.arange(6.0))
    d = load_labelled_npz(str(path))
    assert d.x.shape == (6, 3) and d.x.dtype == torch.float32
    assert d.labels.tolist() == [0, 1, 2, 0, 1, 2] and d.labels.dtype == torch.int64
    assert d.factors.shape == (6, 1)
    np.savez(path, x=np.zeros((4, 8, 8)))
    d = load_labelled_npz(str(path))
    assert d.x.shape == (4, 1, 8, 8) and d.labels is None and d.factors is None


@pytest.mark.parametrize(
    "arrays, key",
    [
        ({"y": np.zeros((3, 2))}, "'x'"),
        ({"x": np.array([[0.0, np.nan], [1, 2]])}, "'x'"),
        ({"x": np.zeros((3, 2)), "labels": np.array([0, 1])}, "'labels'"),
        ({"x": np.zeros((3, 2)), "labels": np.array([0, 1.5, 2])}, "'labels'"),
        ({"x": np.zeros((3, 2)), "labels": np.array([0, np.nan, 2])}, "'labels'"),
        ({"x": np.zeros((3, 2)), "factors": np.zeros((2, 2))}, "'factors'"),
        ({"x": np.zeros((3, 2)), "factors": np.array([[0.0], [np.inf], [1]])}, "'factors'"),
    ],
)
def test_labelled_npz_errors_name_the_bad_key(tmp_path, arrays, key):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFormatError, match=key):
        load_labelled_npz(str(path))
