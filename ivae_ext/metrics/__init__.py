"""Metrics: MCC for identifiability; mutual information and total correlation of an encoder."""

from ivae_ext.metrics.information import MIEstimate, TCEstimate, mutual_information, total_correlation
from ivae_ext.metrics.mcc import correlation_matrix, mcc

__all__ = ["mcc", "correlation_matrix", "mutual_information", "total_correlation", "MIEstimate", "TCEstimate"]
