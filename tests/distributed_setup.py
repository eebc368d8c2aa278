"""The small training run the distributed tests compare: the same in one process and under torchrun."""

from __future__ import annotations

import torch

from ivae_ext import fit
from ivae_ext.data import make_nonlinear_ica
from ivae_ext.models import IVAE


def train_small_ivae(epochs: int, batch_size: int, rows: int, checkpoint=None, resume=False, stop_after=None):
    """(model, history): a float64 iVAE fit on the first `rows` points with split-invariant noise
    (a distributed run's default)."""
    d = make_nonlinear_ica(n_sources=2, n_segments=4, per_segment=50, mixing_layers=2, seed=0)
    torch.manual_seed(0)
    model = IVAE(2, 2, 4, hidden_dim=16).double()
    history = fit(model, d.x[:rows], d.u[:rows], epochs=epochs, batch_size=batch_size, lr=1e-2, seed=3, progress=False,
                  checkpoint=checkpoint, resume=resume, max_epochs_this_call=stop_after, split_invariant_noise=True)
    return model, history
