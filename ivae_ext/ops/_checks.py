"""Argument checks the wrappers make before the dispatcher sees the arguments: its own errors for a
non-tensor are a pybind11 cast message or, for None, "tensor does not have a device"."""

import torch


def require_tensors(op: str, names, values) -> None:
    """TypeError naming the op and the argument unless every value is a torch.Tensor."""
    for name, value in zip(names, values):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def raise_if_not_positive_definite(op: str, flagged: torch.Tensor, first_detail) -> None:
    """ValueError naming the op, how many samples of ``flagged`` [B] (bool) are set and the first
    one (``first_detail(index)`` adds what was found there) — the log-determinant ops' check=True
    policy for Hessians that are not positive definite. Reads the flags on the host."""
    count = int(flagged.sum())
    if count:
        first = int(flagged.nonzero()[0, 0])
        raise ValueError(
            f"{op}: the Hessian ∇²ψ(x) is not positive definite for {count} of {flagged.numel()} samples "
            f"(first: sample {first}{first_detail(first)}); its log-determinant is undefined there. Use "
            f"alpha > 0 (strong convexity) and non-negative W, w (ivae_ext.nn.ICNN keeps them so), or pass "
            f"check=False to get NaN for those samples."
        )
