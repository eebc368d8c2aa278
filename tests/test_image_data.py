"""Image data: binarised sklearn digits, IDX files (written here), image .npz files, the --data specs."""

import gzip
import os

import numpy as np
import pytest
import torch

from ivae_ext.data import (
    DataFormatError,
    ImageData,
    check_bernoulli_data,
    load_digits_binary,
    load_idx,
    load_image_data,
    load_npz_images,
    split_indices,
)

# ------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")  # the bundled digits data ships with scikit-learn
    return load_digits_binary()


def test_digits_split_sizes_and_binary_values(digits):
    assert (digits.n_train, digits.n_test, digits.dim) == (1437, 360, 64)
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.x_train.dtype == torch.float32 and digits.x_test.dtype == torch.float32
    assert digits.likelihood == "bernoulli" and digits.image_shape == (8, 8) and digits.name == "digits"
    for x in (digits.x_train, digits.x_test):
        assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    assert digits.y_train.shape == (1437,) and digits.y_test.shape == (360,)
    assert set(torch.unique(digits.y_train).tolist()) == set(range(10))


def test_digits_are_deterministic(digits):
    again = load_digits_binary()
    for key in ("x_train", "x_test", "y_train", "y_test"):
        assert torch.equal(getattr(digits, key), getattr(again, key)), key


def test_digits_follow_the_stated_split_and_threshold(digits):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x = raw.data / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, raw.target, test_size=0.2, random_state=0)
    # strict '>': a pixel of exactly 8/16 = 0.5 becomes 0, 9/16 becomes 1
    assert torch.equal(digits.x_train, torch.from_numpy((x_tr > 0.5).astype(np.float32)))
    assert torch.equal(digits.x_test, torch.from_numpy((x_te > 0.5).astype(np.float32)))
    assert np.array_equal(digits.y_train.numpy(), y_tr) and np.array_equal(digits.y_test.numpy(), y_te)
    half = x_tr == 0.5
    assert half.any() and (digits.x_train.numpy()[half] == 0).all()
    assert (digits.x_train.numpy()[x_tr == 9 / 16] == 1).all()


def test_digits_threshold_argument(digits):
    low = load_digits_binary(threshold=0.0)  # every nonzero pixel is on
    assert low.x_train.sum() > digits.x_train.sum()
    assert torch.equal(low.y_train, digits.y_train), "the split does not depend on the threshold"
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        load_digits_binary(threshold=1.0)


def test_split_indices_match_sklearn():
    pytest.importorskip("sklearn")
    from sklearn.model_selection import train_test_split

    for n, frac, seed in [(1797, 0.2, 0), (5, 0.2, 0), (11, 0.2, 3), (100, 0.3, 7), (2, 0.5, 1)]:
        train, test = split_indices(n, frac, seed)
        ref_train, ref_test = train_test_split(np.arange(n), test_size=frac, random_state=seed)
        assert np.array_equal(train, ref_train) and np.array_equal(test, ref_test), (n, frac, seed)


def test_split_indices_errors():
    with pytest.raises(ValueError, match="test_fraction must be in"):
        split_indices(10, 1.0)
    with pytest.raises(DataFormatError, match="cannot split 1 point"):
        split_indices(1, 0.2)


# ------------------------------------------------------------------------------------------
# IDX
# ------------------------------------------------------------------------------------------

TRAIN_N, TEST_N, ROWS, COLS = 5, 3, 4, 3


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path, data: bytes, compress: bool):
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def _write_idx_dir(directory, compress=False, train_n=TRAIN_N, test_n=TEST_N, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (train_n, ROWS, COLS)), 0x803),
        "train-labels-idx1-ubyte": (rng.integers(0, 10, train_n), 0x801),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (test_n, ROWS, COLS)), 0x803),
        "t10k-labels-idx1-ubyte": (rng.integers(0, 10, test_n), 0x801),
    }
    # pin the binarisation boundary: 127/255 < 0.5 < 128/255
    arrays["train-images-idx3-ubyte"][0][0, 0, :3] = [127, 128, 255]
    os.makedirs(directory, exist_ok=True)
    for name, (array, magic) in arrays.items():
        _write(os.path.join(directory, name), _idx_bytes(array, magic), compress)
    return {name: array for name, (array, _) in arrays.items()}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_idx_round_trip_greyscale(tmp_path, compress):
    arrays = _write_idx_dir(tmp_path, compress)
    d = load_idx(str(tmp_path), binarize=False)
    assert isinstance(d, ImageData) and d.likelihood == "gaussian"
    assert (d.n_train, d.n_test, d.dim, d.image_shape) == (TRAIN_N, TEST_N, ROWS * COLS, (ROWS, COLS))
    expect = arrays["train-images-idx3-ubyte"].reshape(TRAIN_N, -1) / 255.0
    np.testing.assert_allclose(d.x_train.numpy(), expect, rtol=0, atol=1e-7)
    assert d.x_train.min() >= 0 and d.x_train.max() <= 1 and d.x_train.dtype == torch.float32
    np.testing.assert_allclose(
        d.x_test.numpy(), arrays["t10k-images-idx3-ubyte"].reshape(TEST_N, -1) / 255.0, atol=1e-7
    )
    assert np.array_equal(d.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(d.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert d.y_train.dtype == torch.int64 and d.name == f"idx:{tmp_path}"


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_idx_binarised_by_default(tmp_path, compress):
    arrays = _write_idx_dir(tmp_path, compress)
    d = load_idx(str(tmp_path))
    assert d.likelihood == "bernoulli"
    expect = (arrays["train-images-idx3-ubyte"].reshape(TRAIN_N, -1) >= 128).astype(np.float32)
    assert np.array_equal(d.x_train.numpy(), expect)
    assert d.x_train[0, :3].tolist() == [0.0, 1.0, 1.0]  # bytes 127, 128, 255
    check_bernoulli_data(d.x_test)


def test_idx_limit_and_gzip_detected_by_content(tmp_path):
    arrays = _write_idx_dir(tmp_path, compress=True)
    # a gzip file without the .gz name is still read (recognised by its header)
    os.rename(tmp_path / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte")
    d = load_idx(str(tmp_path), limit=2, binarize=False)
    assert (d.n_train, d.n_test) == (2, 2)
    np.testing.assert_allclose(
        d.x_train.numpy(), arrays["train-images-idx3-ubyte"][:2].reshape(2, -1) / 255.0, atol=1e-7
    )
    assert np.array_equal(d.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"][:2])
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_idx(str(tmp_path), limit=0)


def test_idx_missing_files_are_named(tmp_path):
    _write_idx_dir(tmp_path)
    os.remove(tmp_path / "t10k-images-idx3-ubyte")
    os.remove(tmp_path / "train-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError) as info:
        load_idx(str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path) in msg and "train-labels-idx1-ubyte" in msg and "t10k-images-idx3-ubyte" in msg
    assert "missing IDX file(s)" in msg and "train-images" not in msg.split("needs all of")[0]
    with pytest.raises(FileNotFoundError, match="IDX data directory not found"):
        load_idx(str(tmp_path / "nowhere"))


def test_idx_bad_magic(tmp_path):
    arrays = _write_idx_dir(tmp_path)
    # labels written where the training images belong
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(arrays["train-labels-idx1-ubyte"], 0x801), False)
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte: not an IDX image file: magic "
                                              r"number 0x00000801, expected 0x00000803"):
        load_idx(str(tmp_path))


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_idx_truncated(tmp_path, compress):
    arrays = _write_idx_dir(tmp_path, compress)
    data = _idx_bytes(arrays["t10k-images-idx3-ubyte"], 0x803)
    suffix = ".gz" if compress else ""
    os.remove(tmp_path / ("t10k-images-idx3-ubyte" + suffix))
    _write(tmp_path / "t10k-images-idx3-ubyte", data[:-5], compress)
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte(\.gz)?: truncated IDX file: the header "
                                              r"declares 3 item\(s\) of shape \(4, 3\) \(36 data bytes\) but "
                                              r"the data ends after 31 byte"):
        load_idx(str(tmp_path))
    _write(tmp_path / "t10k-images-idx3-ubyte", data[:6], compress)  # inside the header
    with pytest.raises(DataFormatError, match="truncated IDX file: the header needs 16 bytes"):
        load_idx(str(tmp_path))


def test_idx_cut_gzip_stream_and_trailing_bytes(tmp_path):
    arrays = _write_idx_dir(tmp_path)
    data = _idx_bytes(arrays["train-images-idx3-ubyte"], 0x803)
    os.remove(tmp_path / "train-images-idx3-ubyte")
    blob = gzip.compress(data)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.gz: truncated"):
        load_idx(str(tmp_path))
    os.remove(tmp_path / "train-images-idx3-ubyte.gz")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(data + b"\0\0")
    with pytest.raises(DataFormatError, match="2 byte\\(s\\) after the 60 data bytes"):
        load_idx(str(tmp_path))


def test_idx_count_mismatch(tmp_path):
    _write_idx_dir(tmp_path)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.arange(4), 0x801), False)
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte holds 5 images but "
                                              "train-labels-idx1-ubyte holds 4 labels"):
        load_idx(str(tmp_path))
    with pytest.raises(DataFormatError, match="holds 5 images but"):  # also when limit reads fewer
        load_idx(str(tmp_path), limit=2)


def test_idx_train_and_test_image_sizes_must_agree(tmp_path):
    _write_idx_dir(tmp_path)
    _write(tmp_path / "t10k-images-idx3-ubyte", _idx_bytes(np.zeros((3, 3, 4)), 0x803), False)
    with pytest.raises(DataFormatError, match="training images are 4×3 but test images are 3×4"):
        load_idx(str(tmp_path))


# ------------------------------------------------------------------------------------------
# .npz
# ------------------------------------------------------------------------------------------


def _save(tmp_path, name="images.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def test_npz_binary_is_bernoulli_and_split_is_fixed(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((50, 6)) > 0.5).astype(np.uint8)
    y = rng.integers(0, 3, 50)
    path = _save(tmp_path, x=x, y=y)
    d = load_npz_images(path)
    assert d.likelihood == "bernoulli" and (d.n_train, d.n_test, d.dim) == (40, 10, 6)
    assert d.image_shape is None and d.name == "images.npz"
    train, test = split_indices(50, 0.2, 0)
    assert np.array_equal(d.x_train.numpy(), x[train]) and np.array_equal(d.x_test.numpy(), x[test])
    assert np.array_equal(d.y_train.numpy(), y[train]) and np.array_equal(d.y_test.numpy(), y[test])
    again = load_npz_images(path)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.x_test, again.x_test)
    other = load_npz_images(path, seed=1, test_fraction=0.3)
    assert other.n_test == 15 and not torch.equal(other.x_test[:10], d.x_test)


def test_npz_real_is_gaussian_and_images_are_flattened(tmp_path):
    x = np.random.default_rng(1).normal(size=(10, 2, 3))
    d = load_npz_images(_save(tmp_path, x=x))
    assert d.likelihood == "gaussian" and d.image_shape == (2, 3) and d.dim == 6
    assert (d.n_train, d.n_test) == (8, 2) and d.y_train is None and d.y_test is None
    train, test = split_indices(10)
    np.testing.assert_array_equal(d.x_train.numpy(), x.reshape(10, 6)[train].astype(np.float32))


def test_npz_with_x_test(tmp_path):
    rng = np.random.default_rng(2)
    x, x_test = rng.random((7, 4)), rng.random((3, 4))
    d = load_npz_images(_save(tmp_path, x=x, x_test=x_test, y=np.arange(7), y_test=np.arange(3)))
    assert (d.n_train, d.n_test) == (7, 3) and d.likelihood == "gaussian"
    np.testing.assert_array_equal(d.x_train.numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(d.x_test.numpy(), x_test.astype(np.float32))
    assert d.y_test.tolist() == [0, 1, 2]
    b = load_npz_images(_save(tmp_path, "b.npz", x=np.eye(4, dtype=bool), x_test=np.zeros((2, 2, 2))))
    assert b.likelihood == "bernoulli" and b.image_shape == (2, 2) and b.x_test.shape == (2, 4)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(data=np.zeros((4, 2)), labels=np.zeros(4)),
         r"missing required array 'x' \(found: data, labels\)"),
        (dict(x=np.zeros(5)), r"'x' must be \[N, D\] \(flattened\) or \[N, H, W\] \(images\), got shape \(5,\)"),
        (dict(x=np.zeros((2, 1, 2, 2))), r"got shape \(2, 1, 2, 2\)"),
        (dict(x=np.zeros((0, 3))), r"'x' is empty \(shape \(0, 3\)\)"),
        (dict(x=np.zeros((0, 2, 2))), r"'x' is empty \(shape \(0, 2, 2\)\)"),
        (dict(x=np.array([["a", "b"]])), "'x' must be numeric"),
        (dict(x=np.where(np.eye(6) > 0, np.nan, 0.0)[:, :2]),
         r"'x' has 2 row\(s\) with NaN or inf values \(rows 0, 1\)"),
        (dict(x=np.zeros((4, 2)), x_test=np.array([[0.0, np.inf]])), r"'x_test' has 1 row\(s\) with NaN or inf"),
        (dict(x=np.zeros((4, 6)), x_test=np.zeros((2, 5))),
         r"'x_test' must have the dimension of 'x' \(D = 6.*got D = 5"),
        (dict(x=np.zeros((4, 2, 3)), x_test=np.zeros((2, 3, 2))), r"\(2×3 images.*got 3×2 images"),
        (dict(x=np.zeros((4, 2)), x_test=np.full((2, 2), 0.5)), "'x' is binary \\(0/1\\) but 'x_test' is not"),
        (dict(x=np.zeros((4, 2)), x_test=np.zeros((0, 2))), "'x_test' is empty"),
        (dict(x=np.zeros((4, 2)), y=np.zeros(3)), r"'y' must hold 4 integer class labels"),
        (dict(x=np.zeros((4, 2)), y=np.full(4, 0.5)), r"'y' must hold 4 integer class labels"),
        (dict(x=np.zeros((4, 2)), x_test=np.zeros((2, 2)), y=np.zeros(4)), "give labels as both"),
        (dict(x=np.zeros((4, 2)), y_test=np.zeros(4)), "'y_test' given without 'x_test'"),
        (dict(x=np.zeros((1, 2))), "cannot split 1 point"),
    ],
    ids=["missing-x", "1d", "4d", "empty", "empty-images", "strings", "nan", "inf-test", "test-D", "test-shape",
         "binary-mismatch", "empty-test", "y-length", "y-fractional", "labels-one-side", "y_test-alone",
         "too-few"],
)
def test_npz_errors(tmp_path, arrays, message):
    path = _save(tmp_path, **arrays)
    with pytest.raises(DataFormatError, match=message) as info:
        load_npz_images(path)
    assert path in str(info.value)


def test_npz_missing_and_unreadable_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_npz_images(str(tmp_path / "nope.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataFormatError, match="bad.npz: not a readable .npz file"):
        load_npz_images(str(bad))


# ------------------------------------------------------------------------------------------
# check_bernoulli_data, ImageData, load_image_data
# ------------------------------------------------------------------------------------------


def test_check_bernoulli_data():
    check_bernoulli_data(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    check_bernoulli_data(np.array([True, False]))
    check_bernoulli_data(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"x_batch: a Bernoulli likelihood needs binary data, but 2 of 4 "
                                         r"values are not 0 or 1 \(e.g. 0.25 at index \(0, 1\)\)"):
        check_bernoulli_data(torch.tensor([[0.0, 0.25], [1.0, 2.0]]), "x_batch")
    with pytest.raises(ValueError, match=r"1 of 3 values .*nan at index 2"):
        check_bernoulli_data(np.array([0.0, 1.0, np.nan]))


def test_image_data_validates_itself():
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        ImageData(x, x, "poisson", None, "t")
    with pytest.raises(ValueError, match="t: x_train: a Bernoulli likelihood needs binary data"):
        ImageData(x + 0.5, x, "bernoulli", None, "t")
    with pytest.raises(DataFormatError, match="x_train has D = 4 columns but x_test has 2"):
        ImageData(x, x[:, :2], "gaussian", None, "t")
    with pytest.raises(DataFormatError, match=r"image_shape \(3, 3\) does not match D = 4"):
        ImageData(x, x, "gaussian", (3, 3), "t")
    with pytest.raises(DataFormatError, match="x_test must be a float32 tensor"):
        ImageData(x, x.double(), "gaussian", None, "t")
    with pytest.raises(DataFormatError, match="both train and test, or for neither"):
        ImageData(x, x, "gaussian", None, "t", y_train=torch.zeros(3, dtype=torch.int64))
    d = ImageData(x, x, "bernoulli", (2, 2), "t")
    with pytest.raises(AttributeError):
        d.likelihood = "gaussian"  # frozen
    assert "3 train / 3 test, D=4" in repr(d)


def test_load_image_data_dispatch(tmp_path, digits):
    got = load_image_data("digits")
    assert torch.equal(got.x_train, digits.x_train) and got.name == "digits"
    _write_idx_dir(tmp_path / "mnist", compress=True)
    assert load_image_data(f"idx:{tmp_path / 'mnist'}").likelihood == "bernoulli"
    grey = load_image_data(f"idx:{tmp_path / 'mnist'}", binarize=False, limit=2)
    assert grey.likelihood == "gaussian" and grey.n_train == 2
    path = _save(tmp_path, x=np.random.default_rng(0).normal(size=(10, 3)))
    assert load_image_data(path).name == "images.npz"
    with pytest.raises(ValueError, match="binarize and limit apply only to idx:DIR"):
        load_image_data(path, limit=3)
    with pytest.raises(ValueError, match="needs a directory"):
        load_image_data("idx:")
    with pytest.raises(ValueError, match=r"unknown image data 'mnist': expected 'digits'.*'idx:DIR'.*\.npz"):
        load_image_data("mnist")
