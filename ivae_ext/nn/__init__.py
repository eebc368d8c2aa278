"""Modules over the fused ops: the input-convex network ψ and its Brenier map ∇ψ."""

from ivae_ext.nn.brenier import BrenierMap
from ivae_ext.nn.icnn import ICNN

__all__ = ["ICNN", "BrenierMap"]
