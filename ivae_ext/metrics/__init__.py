"""Metrics: MCC for identifiability; mutual information and total correlation of an encoder;
per-latent collapse diagnostics (active units, KL per latent, decoder sensitivity); the
importance-weighted log-likelihood; the IMA contrast c_IMA; the decomposition VAE's Hoyer sparsity,
clustering scores and Kim & Mnih disentanglement."""

from ivae_ext.metrics.decomp import (
    ClusteringScores,
    DisentanglementScore,
    cluster_accuracy,
    clustering_scores,
    disentanglement_score,
    hoyer_sparsity,
)
from ivae_ext.metrics.ima import cima, global_cima, jacobians, log_volume
from ivae_ext.metrics.information import MIEstimate, TCEstimate, mutual_information, total_correlation
from ivae_ext.metrics.likelihood import IWEstimate, iw_log_likelihood
from ivae_ext.metrics.latent import ActiveUnits, active_units, decoder_sensitivity, kl_per_latent
from ivae_ext.metrics.mcc import correlation_matrix, mcc

__all__ = [
    "mcc", "correlation_matrix", "mutual_information", "total_correlation", "MIEstimate", "TCEstimate",
    "cima", "global_cima", "jacobians", "log_volume",
    "active_units", "ActiveUnits", "kl_per_latent", "decoder_sensitivity", "iw_log_likelihood", "IWEstimate",
    "hoyer_sparsity", "cluster_accuracy", "clustering_scores", "ClusteringScores", "disentanglement_score",
    "DisentanglementScore",
]
