"""Autograd glue shared by the ops (their first derivatives are registered in C++)."""

import torch


def refuse_double_backward(backward_op: str, op_name: str, alternative: str) -> None:
    """Make differentiating `backward_op` (i.e. a second derivative of `op_name`) a clear error."""

    def backward(ctx, *grads):
        raise RuntimeError(
            f"ivae_ext.ops.{op_name}: double backward (second derivatives through the fused op) is not "
            f"supported; use {alternative} where you need them"
        )

    def setup_context(ctx, inputs, output):
        pass

    torch.library.register_autograd(backward_op, backward, setup_context=setup_context)


def records_graph(*tensors) -> bool:
    """Whether an op on these inputs records an autograd graph (what a custom op does): grad mode
    is on and some input requires grad."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
