"""Models. Common interface: ``loss(batch) -> dict`` ("loss" plus named terms), ``encode``,
``decode``, ``sample`` (flows: ``log_prob``, ``sample``, ``inverse``); a batch is a dict with "x" (and "u" for conditional models)."""

from ivae_ext.models.decomp import DecompVAE
from ivae_ext.models.flow import ConvexPotentialFlow
from ivae_ext.models.imavae import IMAVAE
from ivae_ext.models.ivae import IVAE
from ivae_ext.models.latent_vae import LatentVAE, MLPVAE
from ivae_ext.models.lidvae import LIDVAE, BrenierDecoder, InjectiveLift
from ivae_ext.models.vae import VAE

__all__ = ["BrenierDecoder", "ConvexPotentialFlow", "DecompVAE", "IMAVAE", "IVAE", "InjectiveLift", "LIDVAE", "LatentVAE", "MLPVAE", "VAE"]
