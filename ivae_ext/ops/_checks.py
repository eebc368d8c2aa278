"""Argument checks the wrappers make before the dispatcher sees the arguments: its own errors for a
non-tensor are a pybind11 cast message or, for None, "tensor does not have a device"."""

import torch


def require_tensors(op: str, names, values) -> None:
    """TypeError naming the op and the argument unless every value is a torch.Tensor."""
    for name, value in zip(names, values):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
