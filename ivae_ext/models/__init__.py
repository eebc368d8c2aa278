"""Models. Common interface: ``loss(batch) -> dict`` ("loss" plus named terms), ``encode``,
``decode``, ``sample``; a batch is a dict with "x" (and "u" for conditional models)."""

from ivae_ext.models.ivae import IVAE
from ivae_ext.models.vae import VAE

__all__ = ["IVAE", "VAE"]
