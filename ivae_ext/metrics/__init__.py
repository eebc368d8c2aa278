"""Metrics for identifiability: MCC."""

from ivae_ext.metrics.mcc import correlation_matrix, mcc

__all__ = ["mcc", "correlation_matrix"]
