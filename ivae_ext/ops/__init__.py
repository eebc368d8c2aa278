"""Fused ops. Each wrapper validates nothing twice: the C++ kernels check real tensors, the
fake kernels (and the reference fallback) check with the same messages.

``use_reference_ops()`` (a thread-local context manager / decorator) makes every op here compute
with its pure-PyTorch reference in ``ivae_ext.reference`` instead, same checks and outputs;
``reference_ops_enabled()`` says whether it is on.
"""

from ivae_ext.ops._switch import reference_ops_enabled, use_reference_ops
from ivae_ext.ops.aggregate_log_q import aggregate_log_q
from ivae_ext.ops.brenier_logdet import brenier_logdet, brenier_map_logdet
from ivae_ext.ops.expfam_kl import expfam_kl
from ivae_ext.ops.icnn_map import icnn_map
from ivae_ext.ops.imq_mmd import imq_mmd
from ivae_ext.ops.logdet_surrogate import brenier_map_surrogate, stochastic_logdet_surrogate

__all__ = [
    "aggregate_log_q", "brenier_logdet", "brenier_map_logdet", "brenier_map_surrogate", "expfam_kl", "icnn_map",
    "imq_mmd", "reference_ops_enabled", "stochastic_logdet_surrogate", "use_reference_ops",
]
