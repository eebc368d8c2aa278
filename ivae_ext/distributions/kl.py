"""Drop-in for ``torch.distributions.kl_divergence`` that routes to the fused KL op.

Normal/Normal and Laplace/Laplace pairs (bare, or wrapped in ``Independent``) go through
``ivae_ext.ops.expfam_kl``; every other pair is handed to ``torch.distributions.kl_divergence``
unchanged, so the function can replace it everywhere.
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, Laplace, Normal
from torch.distributions import kl_divergence as _torch_kl_divergence

from ivae_ext.ops import expfam_kl

_FAMILY_OF = {Normal: "gaussian", Laplace: "laplace"}


def _family_and_base(dist):
    """(family, base distribution, number of reinterpreted event dims) or None."""
    ndims = 0
    while isinstance(dist, Independent):
        ndims += dist.reinterpreted_batch_ndims
        dist = dist.base_dist
    family = _FAMILY_OF.get(type(dist))
    return (family, dist, ndims) if family else None


def _as_rows(param: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """View `param` (broadcastable to `shape`) as [rows, last] or a broadcastable [last]/[1]."""
    last = shape[-1] if len(shape) else 1
    if param.shape == shape:
        return param.reshape(-1, last)
    if all(size == 1 for size in param.shape[:-1]):
        return param.reshape(-1)  # [d] or [1]: broadcast by the op without a copy
    return param.expand(shape).reshape(-1, last)  # broadcast in leading dims: needs the copy


def kl_divergence(q, p) -> torch.Tensor:
    """KL(q || p), fused for Normal and Laplace pairs; otherwise torch's implementation."""
    q_info, p_info = _family_and_base(q), _family_and_base(p)
    if q_info is None or p_info is None or q_info[0] != p_info[0] or q_info[2] != p_info[2]:
        return _torch_kl_divergence(q, p)
    family, q_base, event_ndims = q_info
    p_base = p_info[1]
    shape = torch.broadcast_shapes(q_base.batch_shape, p_base.batch_shape)
    q_loc = q_base.loc.expand(shape).reshape(-1, shape[-1] if len(shape) else 1)
    q_log_scale = q_base.scale.log().expand(shape).reshape(q_loc.shape)
    p_loc = _as_rows(p_base.loc, shape)
    p_log_scale = _as_rows(p_base.scale.log(), shape)
    if event_ndims == 1:
        return expfam_kl(q_loc, q_log_scale, p_loc, p_log_scale, family, "sum").reshape(shape[:-1])
    kl = expfam_kl(q_loc, q_log_scale, p_loc, p_log_scale, family, "none").reshape(shape)
    return kl.sum(tuple(range(-event_ndims, 0))) if event_ndims else kl
