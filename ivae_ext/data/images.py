"""Image data for the LIDVAE experiments: binarised sklearn digits, MNIST-style IDX files, and .npz.

Every loader returns an :class:`ImageData`: flattened float32 tensors ``x_train`` [N, D] and
``x_test`` [M, D], the likelihood the decoder should use (``"bernoulli"`` for binary data,
``"gaussian"`` otherwise), the image shape when known, and integer labels when the source has them.
Nothing is downloaded.

The command-line spellings of ``--data`` are resolved by :func:`load_image_data`:

- ``digits``: :func:`load_digits_binary`, sklearn's bundled 8 × 8 digits (1797 images), pixels
  divided by 16 and binarised (value > 0.5 → 1, so a pixel of exactly 8/16 is 0), split 1437 train /
  360 test with the fixed split of ``sklearn.model_selection.train_test_split(test_size=0.2,
  random_state=0)``. Needs scikit-learn (only for the bundled data file).
- ``idx:DIR``: :func:`load_idx`, the four MNIST / Fashion-MNIST files already in DIR (raw or
  gzip-compressed); pixels scaled to [0, 1] and, by default, binarised at 0.5.
- ``PATH.npz``: :func:`load_npz_images`, an array ``x`` [N, D] or [N, H, W] and optionally
  ``x_test``; otherwise the same fixed 20 % split as the digits (seeded).

Bad data raises :class:`~ivae_ext.data.npz.DataFormatError` (a ``ValueError``) with a message that
names the file and what is wrong; missing files raise ``FileNotFoundError`` naming them. Models with
a Bernoulli likelihood call :func:`check_bernoulli_data` on what they are given.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ivae_ext.data.npz import DataFormatError, read_npz

LIKELIHOODS = ("bernoulli", "gaussian")

#: The IDX files read by :func:`load_idx`, by role (each may also end in ``.gz``).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions [N, rows, cols]
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension [N]
_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------------------------
# The container and the checks the models use
# --------------------------------------------------------------------------------------------


def _nonbinary_description(x: torch.Tensor) -> str | None:
    """None if every value of x is 0 or 1, else a phrase on how many are not and where one is."""
    bad = (x != 0) & (x != 1)  # NaN compares unequal to both, so NaN counts as non-binary
    if not bool(bad.any()):
        return None
    first = tuple(torch.nonzero(bad)[0].tolist())
    where = f"index {first[0] if len(first) == 1 else first}" if first else "the scalar"
    return f"{int(bad.sum())} of {x.numel()} values are not 0 or 1 (e.g. {float(x[first]):g} at {where})"


def check_bernoulli_data(x, name: str = "x") -> None:
    """Raise ValueError unless every value of x (a tensor or array, any shape) is exactly 0 or 1.

    A Bernoulli likelihood log p(x|z) = x log p + (1 − x) log(1 − p) is a valid log-probability only
    for binary x; on greyscale values it silently trains something else. The message says how many
    values are off, shows one (NaN included), and how to fix it. Empty data passes.
    """
    t = torch.as_tensor(x)
    if t.numel() == 0:
        return
    if t.dtype == torch.bool:
        return
    problem = _nonbinary_description(t)
    if problem is not None:
        raise ValueError(
            f"{name}: a Bernoulli likelihood needs binary data, but {problem}; binarise it first "
            "(e.g. x = (x > 0.5).float()) or use a Gaussian likelihood"
        )


def _check_finite_rows(name: str, x: torch.Tensor, where: str) -> None:
    bad = ~torch.isfinite(x).reshape(len(x), -1).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise DataFormatError(
            f"{where}: '{name}' has {len(rows)} row(s) with NaN or inf values (rows {shown}); "
            "drop or impute them first"
        )


@dataclass(frozen=True)
class ImageData:
    """A train/test pair of flattened images and the likelihood to model them with.

    x_train [N, D] and x_test [M, D]: float32 CPU tensors, one flattened image per row.
    likelihood: ``"bernoulli"`` (every value is 0 or 1) or ``"gaussian"``.
    image_shape: (H, W) with H·W = D when the rows are images of a known shape, else None.
    name: where the data came from (``"digits"``, ``"idx:DIR"``, the .npz file name).
    y_train [N], y_test [M]: int64 class labels, or None (both present or both None).

    Construction checks all of this (2-D, matching D, finite values, binary data under
    ``"bernoulli"``, label lengths) and raises ``DataFormatError`` / ``ValueError`` otherwise.
    """

    x_train: torch.Tensor
    x_test: torch.Tensor
    likelihood: str
    image_shape: tuple[int, int] | None
    name: str
    y_train: torch.Tensor | None = None
    y_test: torch.Tensor | None = None

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        for key in ("x_train", "x_test"):
            x = getattr(self, key)
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.ndim != 2:
                desc = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
                raise DataFormatError(f"{self.name}: {key} must be a float32 tensor [N, D], got {desc}")
            if len(x) == 0 or x.shape[1] == 0:
                raise DataFormatError(f"{self.name}: {key} is empty (shape {tuple(x.shape)})")
            _check_finite_rows(key, x, self.name)
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise DataFormatError(
                f"{self.name}: x_train has D = {self.x_train.shape[1]} columns but x_test has "
                f"{self.x_test.shape[1]}"
            )
        if self.image_shape is not None:
            if len(self.image_shape) != 2 or math.prod(self.image_shape) != self.dim:
                raise DataFormatError(
                    f"{self.name}: image_shape {self.image_shape} does not match D = {self.dim}"
                )
        if self.likelihood == "bernoulli":
            check_bernoulli_data(self.x_train, f"{self.name}: x_train")
            check_bernoulli_data(self.x_test, f"{self.name}: x_test")
        if (self.y_train is None) != (self.y_test is None):
            raise DataFormatError(f"{self.name}: give labels for both train and test, or for neither")
        if self.y_train is not None:
            for key, x in (("y_train", self.x_train), ("y_test", self.x_test)):
                y = getattr(self, key)
                if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (len(x),):
                    shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                    raise DataFormatError(
                        f"{self.name}: {key} must be an int64 tensor [{len(x)}], got {shape}"
                    )

    @property
    def dim(self) -> int:
        """D, the number of features (pixels) per point."""
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        shape = f", image_shape={self.image_shape}" if self.image_shape else ""
        labels = ", labelled" if self.y_train is not None else ""
        return (
            f"ImageData({self.name!r}: {self.n_train} train / {self.n_test} test, D={self.dim}"
            f"{shape}, {self.likelihood}{labels})"
        )


# --------------------------------------------------------------------------------------------
# The fixed split
# --------------------------------------------------------------------------------------------


def split_indices(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices of the fixed seeded split of n points.

    The same indices, in the same order, as ``sklearn.model_selection.train_test_split(
    np.arange(n), test_size=test_fraction, random_state=seed)`` (no stratification): a permutation
    from ``np.random.RandomState(seed)``, the first ceil(test_fraction · n) of it for test and the
    rest for train. Written out here so that the split never changes with the installed sklearn
    version and .npz data does not need sklearn; a test checks it against sklearn.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = math.ceil(test_fraction * n)
    if n - n_test < 1 or n_test < 1:
        raise DataFormatError(
            f"cannot split {n} point(s) into train and test with test_fraction={test_fraction}: "
            "both sides need at least one point"
        )
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_test:], perm[:n_test]


# --------------------------------------------------------------------------------------------
# sklearn digits
# --------------------------------------------------------------------------------------------


def load_digits_binary(threshold: float = 0.5) -> ImageData:
    """sklearn's bundled 8 × 8 digits, binarised, with the fixed 1437 / 360 split. No download.

    Pixels (integers 0–16) are divided by 16 and set to 1 where the result is strictly greater than
    ``threshold`` and 0 otherwise; at the default 0.5 a pixel of exactly 8 (0.5) becomes 0, so 1
    means a pixel value of 9–16. The split is :func:`split_indices` (1797, 0.2, seed 0), i.e.
    ``train_test_split(test_size=0.2, random_state=0)``: 1437 train and 360 test points of D = 64,
    likelihood ``"bernoulli"``, image_shape (8, 8), labels 0–9.
    """
    threshold = float(threshold)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(
            f"threshold must be in [0, 1) (pixels are scaled to [0, 1]), got {threshold}"
        )
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - sklearn is installed by the Makefile
        raise ImportError(
            "load_digits_binary needs scikit-learn for its bundled digits data: pip install scikit-learn"
        ) from exc
    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float64) / 16.0 > threshold).astype(np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    train, test = split_indices(len(x), 0.2, 0)
    return ImageData(
        x_train=torch.from_numpy(np.ascontiguousarray(x[train])),
        x_test=torch.from_numpy(np.ascontiguousarray(x[test])),
        likelihood="bernoulli",
        image_shape=(8, 8),
        name="digits",
        y_train=torch.from_numpy(y[train]),
        y_test=torch.from_numpy(y[test]),
    )


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------


def _idx_candidates(stem: str) -> list[str]:
    # "train-images-idx3-ubyte" as distributed; "train-images.idx3-ubyte" as in some mirrors.
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def _find_idx_files(directory: str) -> dict[str, str]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"IDX data directory not found: {directory!r} (idx:DIR needs the directory holding "
            f"{', '.join(IDX_FILES.values())}, each optionally .gz)"
        )
    found, missing = {}, []
    for role, stem in IDX_FILES.items():
        for name in _idx_candidates(stem):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                found[role] = path
                break
        else:
            missing.append(stem)
    if missing:
        raise FileNotFoundError(
            f"{directory}: missing IDX file(s) {', '.join(missing)} (each may also end in .gz); "
            f"idx:DIR needs all of {', '.join(IDX_FILES.values())}. Nothing is downloaded: put the "
            "MNIST or Fashion-MNIST files there"
        )
    return found


def _read_idx(path: str, magic: int, limit: int | None) -> tuple[np.ndarray, int]:
    """One IDX file of unsigned bytes: (uint8 array [n, *dims] of the first `limit` items if given,
    else all; the item count N its header declares).

    Compressed files are recognised by their gzip header, whatever their name.
    """
    ndim = magic & 0xFF
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
            if len(header) < 4:
                raise DataFormatError(
                    f"{path}: truncated IDX file: {len(header)} byte(s), not even the 4-byte magic number"
                )
            found = int.from_bytes(header[:4], "big")
            if found != magic:
                kind = "image" if magic == IDX_IMAGES_MAGIC else "label"
                raise DataFormatError(
                    f"{path}: not an IDX {kind} file: magic number 0x{found:08X}, expected "
                    f"0x{magic:08X} (unsigned bytes, {ndim} dimension(s))"
                )
            if len(header) < 4 + 4 * ndim:
                raise DataFormatError(
                    f"{path}: truncated IDX file: the header needs {4 + 4 * ndim} bytes, the file has "
                    f"{len(header)}"
                )
            dims = tuple(int(d) for d in np.frombuffer(header[4:], dtype=">u4"))
            count = dims[0] if limit is None else min(dims[0], limit)
            per_item = math.prod(dims[1:])
            want = count * per_item
            body = f.read(want)
            if len(body) < want:
                raise DataFormatError(
                    f"{path}: truncated IDX file: the header declares {dims[0]} item(s) of shape "
                    f"{dims[1:]} ({dims[0] * per_item} data bytes) but the data ends after "
                    f"{len(body)} byte(s)"
                )
            if limit is None:
                extra = len(f.read())
                if extra:
                    raise DataFormatError(
                        f"{path}: malformed IDX file: {extra} byte(s) after the {want} data bytes "
                        f"the header declares ({dims[0]} item(s) of shape {dims[1:]})"
                    )
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # a corrupt or cut-off gzip stream
        raise DataFormatError(f"{path}: truncated or corrupt IDX file ({exc})") from exc
    return np.frombuffer(body, dtype=np.uint8).reshape((count,) + dims[1:]), dims[0]


def load_idx(directory: str, *, binarize: bool = True, limit: int | None = None) -> ImageData:
    """MNIST or Fashion-MNIST from the four standard IDX files in `directory`. No download.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` (each raw or gzip-compressed: ``.gz`` names are accepted, and a gzip
    header is recognised whatever the name; the ``train-images.idx3-ubyte`` spelling of some
    mirrors too). The headers are checked (magic 0x00000803 for images, 0x00000801 for labels,
    big-endian dimensions), and so are the lengths (no truncated or over-long files) and that each
    images file has as many images as its labels file has labels.

    Pixels are scaled to [0, 1] (byte / 255). ``binarize=True`` (the default) then sets a pixel to
    1 where it is > 0.5 (bytes 128–255) and 0 otherwise, and the likelihood is ``"bernoulli"``;
    ``binarize=False`` keeps the greyscale values with a ``"gaussian"`` likelihood. Binarised is
    the default because the image experiments model pixels with a Bernoulli decoder, as the
    binarised-MNIST benchmarks do, and as ``digits`` is; a Gaussian density on values confined to
    [0, 1] (most of them exactly 0) is a poor likelihood, so greyscale is opt-in.

    ``limit``: keep only the first `limit` training and the first `limit` test images (for quick
    runs; only those bytes are read). The returned data has image_shape (rows, cols), labels, and
    name ``"idx:<directory>"``.
    """
    if not isinstance(binarize, (bool, np.bool_)):
        raise TypeError(f"binarize must be True or False, got {binarize!r}")
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    limit = None if limit is None else int(limit)
    paths = _find_idx_files(directory)
    arrays, declared = {}, {}
    for role, path in paths.items():
        magic = IDX_IMAGES_MAGIC if role.endswith("images") else IDX_LABELS_MAGIC
        arrays[role], declared[role] = _read_idx(path, magic, limit)
    for split in ("train", "test"):
        n_images, n_labels = declared[f"{split}_images"], declared[f"{split}_labels"]
        if n_images != n_labels:  # compared on the headers, so also when `limit` reads fewer
            raise DataFormatError(
                f"{directory}: {os.path.basename(paths[split + '_images'])} holds {n_images} images "
                f"but {os.path.basename(paths[split + '_labels'])} holds {n_labels} labels"
            )
        if n_images == 0:
            raise DataFormatError(f"{paths[split + '_images']}: the IDX file holds no images")
    shape_train = arrays["train_images"].shape[1:]
    shape_test = arrays["test_images"].shape[1:]
    if shape_train != shape_test:
        raise DataFormatError(
            f"{directory}: training images are {shape_train[0]}×{shape_train[1]} but test images are "
            f"{shape_test[0]}×{shape_test[1]}"
        )

    def pixels(images: np.ndarray) -> torch.Tensor:
        x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
        if binarize:
            x = (x > 0.5).astype(np.float32)
        return torch.from_numpy(x)

    return ImageData(
        x_train=pixels(arrays["train_images"]),
        x_test=pixels(arrays["test_images"]),
        likelihood="bernoulli" if binarize else "gaussian",
        image_shape=(int(shape_train[0]), int(shape_train[1])),
        name=f"idx:{directory}",
        y_train=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        y_test=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    )


# --------------------------------------------------------------------------------------------
# .npz
# --------------------------------------------------------------------------------------------


def _npz_images(name: str, arr: np.ndarray, path: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """[N, D] as is, or [N, H, W] flattened to [N, H·W] with image_shape (H, W); float32."""
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(f"{path}: '{name}' must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise DataFormatError(f"{path}: '{name}' must be real, got dtype {arr.dtype}")
    stored_shape = arr.shape
    if arr.ndim == 2:
        shape = None
    elif arr.ndim == 3:
        shape = (int(arr.shape[1]), int(arr.shape[2]))
        arr = arr.reshape(arr.shape[0], shape[0] * shape[1])
    else:
        raise DataFormatError(
            f"{path}: '{name}' must be [N, D] (flattened) or [N, H, W] (images), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataFormatError(f"{path}: '{name}' is empty (shape {stored_shape})")
    x = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(x).all() and np.isfinite(arr.astype(np.float64)).all():
        raise DataFormatError(f"{path}: '{name}' has values too large for float32")
    _check_finite_rows(name, torch.from_numpy(x), path)
    return x, shape


def _npz_labels(name: str, arr: np.ndarray, n: int, path: str) -> np.ndarray:
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) \
            or not np.all(arr == np.round(arr)):
        raise DataFormatError(
            f"{path}: '{name}' must hold {n} integer class labels (shape ({n},)), got dtype "
            f"{arr.dtype} and shape {arr.shape}"
        )
    return arr.astype(np.int64)


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def load_npz_images(path: str, *, test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """Images from an .npz file: ``x`` [N, D] or [N, H, W], optionally ``x_test``, ``y``, ``y_test``.

    - ``x`` (required): one point per row; [N, H, W] is flattened row-major to [N, H·W] and
      image_shape (H, W) is recorded. Values are used as stored (no scaling); bool and integer
      arrays are converted to float32.
    - ``x_test`` (optional): [M, D] or [M, H', W'] with the same D (and, if both are 3-D, the same
      H, W). Without it, the rows of x are split by :func:`split_indices` (test_fraction, seed):
      the same split as ``train_test_split(test_size=test_fraction, random_state=seed)``, fixed
      for a given file, 20 % test by default.
    - ``y`` [N] and ``y_test`` [M] (optional): integer labels, carried through the split. With
      ``x_test``, give both or neither.

    The likelihood is ``"bernoulli"`` if every value (train and test) is exactly 0 or 1, else
    ``"gaussian"``; data that is binary in x but not in x_test (or the reverse) is an error. Other
    arrays in the file are ignored. Errors name the file: a missing x (listing the arrays found),
    a wrong number of dimensions, an empty array, NaN or inf (with the rows), x_test with another D.
    """
    path = os.fspath(path)
    arrays = read_npz(path, ("x",), "x [N, D] or [N, H, W], optionally x_test, y, y_test")
    x, shape = _npz_images("x", arrays["x"], path)
    y = _npz_labels("y", arrays["y"], len(x), path) if "y" in arrays else None
    if "x_test" in arrays:
        x_test, shape_test = _npz_images("x_test", arrays["x_test"], path)
        if x_test.shape[1] != x.shape[1] or (shape and shape_test and shape != shape_test):
            got = f"{shape_test[0]}×{shape_test[1]} images" if shape_test else f"D = {x_test.shape[1]}"
            want = f"{shape[0]}×{shape[1]} images" if shape else f"D = {x.shape[1]}"
            raise DataFormatError(
                f"{path}: 'x_test' must have the dimension of 'x' ({want}, {x.shape[1]} values per "
                f"row), got {got} ({x_test.shape[1]} values per row)"
            )
        shape = shape or shape_test
        if ("y" in arrays) != ("y_test" in arrays):
            raise DataFormatError(f"{path}: with 'x_test', give labels as both 'y' and 'y_test', or neither")
        y_test = _npz_labels("y_test", arrays["y_test"], len(x_test), path) if y is not None else None
        x_train, y_train = x, y
    else:
        if "y_test" in arrays:
            raise DataFormatError(f"{path}: 'y_test' given without 'x_test'")
        try:
            train, test = split_indices(len(x), test_fraction, seed)
        except DataFormatError as exc:
            raise DataFormatError(f"{path}: {exc}; or give a separate 'x_test'") from None
        x_train, x_test = x[train], x[test]
        y_train, y_test = (y[train], y[test]) if y is not None else (None, None)
    binary_train, binary_test = _is_binary(x_train), _is_binary(x_test)
    if "x_test" in arrays and binary_train != binary_test:
        which, other = ("x", "x_test") if binary_train else ("x_test", "x")
        raise DataFormatError(
            f"{path}: '{which}' is binary (0/1) but '{other}' is not, so no one likelihood fits both; "
            "binarise both or neither"
        )
    as_tensor = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return ImageData(
        x_train=as_tensor(x_train),
        x_test=as_tensor(x_test),
        likelihood="bernoulli" if binary_train and binary_test else "gaussian",
        image_shape=shape,
        name=os.path.basename(path),
        y_train=as_tensor(y_train),
        y_test=as_tensor(y_test),
    )


# --------------------------------------------------------------------------------------------
# The --data spellings
# --------------------------------------------------------------------------------------------


def load_image_data(spec: str, *, binarize: bool | None = None, limit: int | None = None) -> ImageData:
    """Resolve a ``--data`` value: ``"digits"``, ``"idx:DIR"`` or a path ending in ``.npz``.

    ``binarize`` and ``limit`` are :func:`load_idx`'s options (None: its defaults, binarised and
    unlimited); giving them with another spec is an error rather than silently ignored.
    """
    spec = os.fspath(spec)
    if spec.startswith("idx:"):
        directory = spec[len("idx:"):]
        if not directory:
            raise ValueError("data spec 'idx:' needs a directory: idx:DIR")
        return load_idx(directory, binarize=True if binarize is None else binarize, limit=limit)
    if binarize is not None or limit is not None:
        raise ValueError(f"binarize and limit apply only to idx:DIR data, not to {spec!r}")
    if spec == "digits":
        return load_digits_binary()
    if spec.lower().endswith(".npz"):
        return load_npz_images(spec)
    raise ValueError(
        f"unknown image data {spec!r}: expected 'digits' (sklearn's bundled 8×8 digits, binarised), "
        "'idx:DIR' (MNIST / Fashion-MNIST IDX files already in DIR; nothing is downloaded) or a "
        "path ending in .npz (x [N, D] or [N, H, W], optional x_test)"
    )
