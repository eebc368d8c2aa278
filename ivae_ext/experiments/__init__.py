"""Experiments behind the CLI, one module per model family over shared pieces.

- ``common``: atomic writing (``write_atomic``, ``write_json``, ``write_text``,
  ``save_state_dict_atomic``), ``load_json``, ``mean_std`` and ``plot_curves``;
- ``ivae``: iVAE / VAE on synthetic nonlinear-ICA data or a user's .npz (``run_train``) and the
  iVAE-vs-VAE reproduction (``reproduce_ivae``);
- ``lidvae``: LIDVAE and its baselines on images (``run_image_train``, ``reproduce_lidvae``);
- ``ima``: the IMA-VAE on mixed sources (``run_ima_train``, ``reproduce_ima``).

Everything that used to live in the single module ``ivae_ext.experiments`` is re-exported here.
"""

from ivae_ext.experiments.common import (
    load_json,
    mean_std,
    plot_curves,
    save_state_dict_atomic,
    write_atomic,
    write_json,
    write_text,
)
from ivae_ext.experiments.ivae import (
    TrainConfig,
    build_model,
    format_table,
    load_data,
    posterior_means,
    reproduce_ivae,
    resolve_prior_mean,
    resolve_pretrain_epochs,
    resolve_unmix_epochs,
    restart_report,
    run_train,
    segment_labels,
)

__all__ = [
    "TrainConfig",
    "build_model",
    "format_table",
    "load_data",
    "load_json",
    "mean_std",
    "plot_curves",
    "posterior_means",
    "reproduce_ivae",
    "resolve_prior_mean",
    "resolve_pretrain_epochs",
    "resolve_unmix_epochs",
    "restart_report",
    "run_train",
    "save_state_dict_atomic",
    "segment_labels",
    "write_atomic",
    "write_json",
    "write_text",
]
