"""The reference-ops switch: run every op wrapper of ivae_ext.ops on ivae_ext.reference instead of
the fused kernels, for debugging and end-to-end benchmarks.

    with ivae_ext.ops.use_reference_ops():
        loss = model.loss(batch)          # expfam_kl, icnn_map, brenier_*, aggregate_log_q, imq_mmd: reference

    @ivae_ext.ops.use_reference_ops()     # note the parentheses
    def evaluate(model, batch): ...

While it is on, each wrapper checks its arguments exactly as it does without the compiled
extension (same messages), then calls the reference, with the fused op's return conventions.
The switch is read when an op is called (forward); a backward through a graph built with it on
differentiates the reference, wherever that backward runs.

The state is per thread (threading.local): a thread started inside the context does not see it
(it starts with the fused ops); enter the context in that thread to switch it there. Nesting
restores the enclosing state on exit, also when the block raises. Under torch.compile the state
is guarded: a function compiled with it off is recompiled (not silently reused) when called
with it on. expfam_kl, aggregate_log_q and imq_mmd then still trace with fullgraph=True; the reference
paths of icnn_map and brenier_* check alpha's sign on the host and call autograd inside, so
they graph-break there (compile without fullgraph when the switch is on).
"""

from __future__ import annotations

import contextlib
import threading

__all__ = ["reference_ops_enabled", "use_reference_ops"]

_state = threading.local()


def reference_ops_enabled() -> bool:
    """True while ``use_reference_ops()`` is in effect in this thread."""
    return getattr(_state, "enabled", False)


class use_reference_ops(contextlib.ContextDecorator):  # noqa: N801  (named like torch.no_grad)
    """Context manager (and decorator: ``@use_reference_ops()``) that makes every op in
    ``ivae_ext.ops`` compute with its pure-PyTorch reference (``enabled=True``), or with the fused
    kernel again inside an enclosing switch (``enabled=False``). Thread-local and nestable; the
    previous state comes back on exit, even on an exception. One instance may be entered again,
    nested, or from several threads: the states to restore are kept per thread, not on it."""

    def __init__(self, enabled: bool = True):
        if not isinstance(enabled, bool):
            hint = " (as a decorator, write @use_reference_ops() with parentheses)" if callable(enabled) else ""
            raise TypeError(f"use_reference_ops: enabled must be a bool, got {type(enabled).__name__}{hint}")
        self.enabled = enabled

    def __enter__(self):
        if not hasattr(_state, "previous"):
            _state.previous = []
        _state.previous.append(reference_ops_enabled())
        _state.enabled = self.enabled
        return self

    def __exit__(self, *exc_info) -> bool:
        _state.enabled = _state.previous.pop()
        return False

    def __repr__(self) -> str:
        return f"use_reference_ops(enabled={self.enabled})"
