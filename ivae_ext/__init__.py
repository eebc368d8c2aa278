"""ivae_ext: identifiable latent-variable models on fused C++/CUDA torch ops.

The fused ops live in :mod:`ivae_ext.ops`; :mod:`ivae_ext.reference` holds their pure-PyTorch
oracles. ``build_info()`` says what was compiled.
"""

from ivae_ext._extension import HAS_EXTENSION, build_info
from ivae_ext import ops, reference
from ivae_ext.distributions import kl_divergence
from ivae_ext import nn

__all__ = ["HAS_EXTENSION", "build_info", "ops", "reference", "kl_divergence", "nn"]
__version__ = "0.1.0"
from ivae_ext.training import fit  # noqa: E402  (issue 3: training loop)
