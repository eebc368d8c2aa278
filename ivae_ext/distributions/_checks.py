"""Argument checks shared by the priors: each error names the argument and shows what it got."""

from __future__ import annotations

import torch


def check_dim(name: str, value) -> int:
    """A latent dimension (or component count): an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def as_float_tensor(name: str, value, like: torch.Tensor | None = None) -> torch.Tensor:
    """value as a floating tensor (keeping a given tensor's dtype/device/graph), else float32 or like's."""
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else value.to(torch.get_default_dtype())
    if isinstance(value, bool) or not isinstance(value, (int, float, list, tuple)):
        raise ValueError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    kwargs = {"dtype": like.dtype, "device": like.device} if like is not None else {"dtype": torch.get_default_dtype()}
    return torch.as_tensor(value, **kwargs)


def check_positive(name: str, t: torch.Tensor) -> None:
    """Every value finite and > 0 (a scale, a variance, degrees of freedom)."""
    bad = ~(torch.isfinite(t) & (t > 0))
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite and > 0, got {t.detach().flatten()[bad.flatten()][:5].tolist()} "
                         f"among its values (shape {tuple(t.shape)})")


def check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf (shape {tuple(t.shape)})")


def check_broadcast_exact(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Broadcast t to exactly `shape` (a larger broadcast shape is an error too)."""
    try:
        if torch.broadcast_shapes(t.shape, shape) == torch.Size(shape):
            return t.expand(shape)
    except RuntimeError:
        pass
    raise ValueError(f"{name} must be broadcastable to shape {tuple(shape)}, got shape {tuple(t.shape)}")
