r"""The pinwheel data of the decomposition VAE's clustering experiment (the anchor's
``scripts/pinwheel.m``, after Johnson et al.'s SVAE): `arms` spiral arms in 2-D, labelled by arm.

Per point of arm k: features f = (1 + radial_std·ε₁, tangential_std·ε₂), angle θ = 2πk/arms +
rate·exp(f₁), and x = f · [[cos θ, −sin θ], [sin θ, cos θ]] (f as a row vector, so x is f rotated
by −θ: the arms wind clockwise). Not normalised (|x| ≈ 1).

The anchor calls ``pinwheel(radial_std=0.1, tangential_std=0.3, …)``, but its MATLAB function
takes the two in the other order, so the data it trains on have std 0.3 along the radius and 0.1
across it. The defaults here reproduce those data and name each std by what it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PinwheelData", "make_pinwheel", "pinwheel", "pinwheel_arm_means"]


def _check_count(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_std(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def pinwheel(n: int, rng: np.random.Generator, arms: int = 4, radial_std: float = 0.3,
             tangential_std: float = 0.1, rate: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x [n, 2], labels [n], features [n, 2]) with arm sizes as equal as n allows, in random order.

    features are the (radial, tangential) coordinates before the rotation: the generative factors.
    """
    n, arms = _check_count("n", n, 0), _check_count("arms", arms, 1)
    radial_std, tangential_std = _check_std("radial_std", radial_std), _check_std("tangential_std", tangential_std)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ValueError(f"rate must be a finite number, got {rate!r}")
    labels = rng.permutation(np.arange(n) % arms)
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    theta = 2 * np.pi * labels / arms + rate * np.exp(features[:, 0])
    c, s = np.cos(theta), np.sin(theta)
    x = np.stack([features[:, 0] * c + features[:, 1] * s, -features[:, 0] * s + features[:, 1] * c], axis=1)
    return x, labels.astype(np.int64), features


def pinwheel_arm_means(arms: int = 4, rate: float = 0.25) -> torch.Tensor:
    """[arms, 2] the point of each arm at its median features (1, 0), row k for label k: unit
    vectors at angle −(2πk/arms + rate·e). Mixture means aligned with the arms, e.g. to check a
    clustering metric; the anchor's prior uses ``circle_means(4)`` instead and lets the model rotate."""
    arms = _check_count("arms", arms, 1)
    theta = 2 * np.pi * np.arange(arms) / arms + rate * np.e
    return torch.as_tensor(np.stack([np.cos(theta), -np.sin(theta)], axis=1), dtype=torch.float32)


@dataclass(frozen=True)
class PinwheelData:
    """x [N, 2] float32, labels (arm) [N] int64 and features [N, 2] float32 per split."""

    x_train: torch.Tensor
    x_val: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor
    y_val: torch.Tensor
    y_test: torch.Tensor
    features_train: torch.Tensor
    features_val: torch.Tensor
    features_test: torch.Tensor
    arms: int
    name: str


def make_pinwheel(n_train: int = 400, n_val: int = 400, n_test: int = 400, arms: int = 4, radial_std: float = 0.3,
                  tangential_std: float = 0.1, rate: float = 0.25, seed: int = 0) -> PinwheelData:
    """Three independent draws (the anchor draws 400 train and 400 test points the same way).

    Each split has its own random stream spawned from `seed`, so changing one split's size does
    not change the others.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check_count(name, value, 1)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    parts = [pinwheel(n, rng, arms, radial_std, tangential_std, rate) for n, rng in zip((n_train, n_val, n_test), rngs)]
    x, y, f = ([torch.as_tensor(p[i], dtype=torch.int64 if i == 1 else torch.float32) for p in parts] for i in range(3))
    return PinwheelData(*x, *y, *f, arms=arms, name=f"pinwheel(arms={arms}, seed={seed})")
