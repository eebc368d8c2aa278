"""Data: the piecewise-stationary nonlinear ICA generator and the .npz loader."""

from ivae_ext.data.npz import DataFormatError, load_npz
from ivae_ext.data.synthetic import NonlinearICAData, make_nonlinear_ica

__all__ = ["NonlinearICAData", "make_nonlinear_ica", "load_npz", "DataFormatError"]
