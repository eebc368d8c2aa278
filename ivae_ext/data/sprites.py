r"""Binary sprites with known factors, for scoring disentanglement: drawn here (no download) or
read from the real dSprites .npz (Matthey et al. 2017) at a user-given path.

Factors, in this column order, as integer indices (``factors``) and values (``values``):

===========  =====  ==============================================================
shape          3    0 square, 1 ellipse, 2 heart (values 1, 2, 3 as dSprites)
scale          6    0.5 … 1 (linear)
orientation   40    0 … 2π, endpoint excluded (dSprites includes it: its first and last coincide)
pos_x         32    0 … 1 (left to right)
pos_y         32    0 … 1 (top to bottom)
===========  =====  ==============================================================

The generator renders each sprite at its pixel centres (no anti-aliasing): a shape of
half-extent 0.18·scale (in image widths) centred at 0.2 + 0.6·pos, rotated by the orientation,
so every sprite stays inside the image. 32 × 32 by default, 64 × 64 as dSprites on request.
Squares repeat every π/2 of rotation and ellipses every π, as in dSprites.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ivae_ext.data.npz import DataFormatError

__all__ = ["FACTOR_NAMES", "FACTOR_SIZES", "SpritesData", "factor_values", "load_dsprites_npz", "make_sprites",
           "render_sprites"]

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
_RENDER_CHUNK = 2048


def factor_values(factors: np.ndarray) -> np.ndarray:
    """Integer factor indices [N, 5] -> their values [N, 5] (float64), by the table above."""
    f = np.asarray(factors)
    return np.stack([
        f[:, 0] + 1.0,
        0.5 + 0.5 * f[:, 1] / (FACTOR_SIZES[1] - 1),
        2 * np.pi * f[:, 2] / FACTOR_SIZES[2],
        f[:, 3] / (FACTOR_SIZES[3] - 1),
        f[:, 4] / (FACTOR_SIZES[4] - 1),
    ], axis=1)


def _shape_masks(lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
    """[3, ...] inside-masks of the square, ellipse and heart, in a frame where each has radius ≈ 1."""
    square = torch.maximum(lx.abs(), ly.abs()) <= 0.7
    ellipse = lx**2 + (ly / 0.5) ** 2 <= 1.0
    hx, hy = 1.15 * lx, -1.15 * ly + 0.15  # the heart curve (x² + y² − 1)³ = x² y³, point down in the image
    heart = (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
    return torch.stack([square, ellipse, heart])


def render_sprites(factors, size: int = 32) -> torch.Tensor:
    """Binary images [N, 1, size, size] float32 of the sprites with integer factors [N, 5]."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[1] != len(FACTOR_SIZES) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"factors must be integer indices [N, {len(FACTOR_SIZES)}], got {f.dtype} array of shape {f.shape}")
    if len(f) and ((f < 0).any() or (f >= np.array(FACTOR_SIZES)).any()):
        raise ValueError(f"factors out of range: column j must be in [0, {FACTOR_SIZES}[j])")
    vals = torch.as_tensor(factor_values(f), dtype=torch.float32)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    out = torch.empty(len(f), 1, size, size)
    for start in range(0, len(f), _RENDER_CHUNK):
        v = vals[start:start + _RENDER_CHUNK, :, None, None]
        radius = 0.18 * v[:, 1]
        dx = (grid[None, None, :] - (0.2 + 0.6 * v[:, 3])) / radius
        dy = (grid[None, :, None] - (0.2 + 0.6 * v[:, 4])) / radius
        c, s = torch.cos(v[:, 2]), torch.sin(v[:, 2])
        masks = _shape_masks(c * dx + s * dy, -s * dx + c * dy)  # [3, n, size, size]
        shape = torch.as_tensor(f[start:start + _RENDER_CHUNK, 0])
        out[start:start + len(shape), 0] = masks[shape, torch.arange(len(shape))].float()
    return out


@dataclass(frozen=True)
class SpritesData:
    """images [N, 1, H, W] (0/1, float32 unless loaded as uint8), factors [N, 5] int64 indices,
    values [N, 5] float32. ``procedural`` data can render new sprites for any factors."""

    images: torch.Tensor
    factors: torch.Tensor
    values: torch.Tensor
    procedural: bool
    name: str
    factor_names: tuple[str, ...] = FACTOR_NAMES
    factor_sizes: tuple[int, ...] = FACTOR_SIZES

    def sample_fixed_factor(self, factor: int, n: int, rng: np.random.Generator) -> torch.Tensor:
        """n images sharing one random value of `factor`, the other factors random (a Kim & Mnih vote).

        Procedural data render fresh sprites with the other factors uniform; loaded data draw rows
        (with replacement) among those with the value of a random row's factor.
        """
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or not 0 <= factor < len(self.factor_sizes):
            raise ValueError(f"factor must be an int in [0, {len(self.factor_sizes)}), got {factor!r}")
        if self.procedural:
            f = np.stack([rng.integers(0, k, n) for k in self.factor_sizes], axis=1)
            f[:, factor] = rng.integers(0, self.factor_sizes[factor])
            return render_sprites(f, self.images.shape[-1]).to(self.images.dtype)
        column = self.factors[:, factor].numpy()
        rows = np.flatnonzero(column == column[rng.integers(len(column))])
        return self.images[torch.as_tensor(rng.choice(rows, n))]


def make_sprites(n: int = 10000, size: int = 32, seed: int = 0) -> SpritesData:
    """n sprites with every factor drawn uniformly (seeded), rendered at size × size."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, k, n) for k in FACTOR_SIZES], axis=1)
    return SpritesData(render_sprites(f, size), torch.as_tensor(f, dtype=torch.int64),
                       torch.as_tensor(factor_values(f), dtype=torch.float32), True, f"sprites(n={n}, size={size}, seed={seed})")


def load_dsprites_npz(path: str, n: int | None = None, seed: int = 0, dtype: torch.dtype = torch.float32) -> SpritesData:
    """The dSprites .npz (``imgs`` [N, 64, 64], ``latents_classes`` and ``latents_values`` [N, 6]):
    colour (column 0, constant) is dropped; ``n`` draws a seeded subset of rows.

    All 737,280 images take 3 GB as uint8 and 12 GB as float32: pass ``n`` or ``dtype=torch.uint8``.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"dSprites file not found: {path} (download dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz "
                                "from github.com/deepmind/dsprites-dataset and pass its path)")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("imgs", "latents_classes", "latents_values") if k not in f.files]
        if missing:
            raise DataFormatError(f"{path}: missing array(s) {missing} (found: {sorted(f.files)}); expected the dSprites "
                                  ".npz with imgs [N, 64, 64], latents_classes [N, 6], latents_values [N, 6]")
        imgs, classes, values = f["imgs"], f["latents_classes"], f["latents_values"]
    if imgs.ndim != 3 or imgs.shape[1] != imgs.shape[2]:
        raise DataFormatError(f"{path}: 'imgs' must be [N, H, H], got shape {imgs.shape}")
    for key, arr in (("latents_classes", classes), ("latents_values", values)):
        if arr.shape != (len(imgs), 6):
            raise DataFormatError(f"{path}: '{key}' must be [N, 6] with N = {len(imgs)} (as 'imgs'), got shape {arr.shape}")
    if not np.issubdtype(classes.dtype, np.integer):
        raise DataFormatError(f"{path}: 'latents_classes' must hold integers, got dtype {classes.dtype}")
    rows = np.arange(len(imgs))
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(imgs):
            raise ValueError(f"n must be an int in [1, {len(imgs)}] or None, got {n!r}")
        rows = np.sort(np.random.default_rng(seed).choice(len(imgs), n, replace=False))
    x = imgs[rows]
    if not np.isin(x, (0, 1)).all():
        raise DataFormatError(f"{path}: 'imgs' must be binary (0/1), found values {np.unique(x)[:5].tolist()}")
    if not np.isfinite(values[rows]).all():
        raise DataFormatError(f"{path}: 'latents_values' has NaN or inf")
    images = torch.as_tensor(x).unsqueeze(1).to(dtype)
    return SpritesData(images, torch.as_tensor(classes[rows, 1:], dtype=torch.int64),
                       torch.as_tensor(values[rows, 1:], dtype=torch.float32), False, os.path.basename(path),
                       factor_sizes=tuple(int(m) + 1 for m in classes[:, 1:].max(0)))
