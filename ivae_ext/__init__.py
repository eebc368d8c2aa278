"""ivae_ext: identifiable latent-variable models on fused C++/CUDA torch ops.

The fused ops live in :mod:`ivae_ext.ops` (their pure-PyTorch oracles in
:mod:`ivae_ext.reference`), modules in :mod:`ivae_ext.nn` and :mod:`ivae_ext.models`, the
training loop is :func:`ivae_ext.fit`; ``build_info()`` says what was compiled.
"""

from ivae_ext._extension import HAS_EXTENSION, build_info
from ivae_ext import nn, ops, reference
from ivae_ext.distributions import kl_divergence
from ivae_ext.training import fit

__all__ = ["HAS_EXTENSION", "build_info", "fit", "kl_divergence", "nn", "ops", "reference"]
__version__ = "0.1.0"
