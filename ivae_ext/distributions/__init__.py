"""torch.distributions glue: ``kl_divergence`` (routes Normal/Laplace pairs to the fused KL op),
the decomposition VAE's priors (all with event_shape (d,), log_prob joint over the latents), and
the Monte-Carlo KL for priors without a closed form."""

from ivae_ext.distributions import kl
from ivae_ext.distributions.kl import kl_divergence
from ivae_ext.distributions.mixture import GaussianMixture, GaussianMixturePrior, circle_means
from ivae_ext.distributions.monte_carlo import monte_carlo_kl
from ivae_ext.distributions.priors import AnisotropicPrior, SpikeAndSlab, gaussian_prior, student_t_prior

__all__ = [
    "kl",
    "kl_divergence",
    "gaussian_prior",
    "student_t_prior",
    "AnisotropicPrior",
    "SpikeAndSlab",
    "GaussianMixture",
    "GaussianMixturePrior",
    "circle_means",
    "monte_carlo_kl",
]
