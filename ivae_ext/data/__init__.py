"""Data: the piecewise-stationary nonlinear ICA generator, the .npz loader, and image data for
the LIDVAE experiments (binarised sklearn digits, MNIST-style IDX files, image .npz), and
mixed sources for the IMA-VAE experiments (Möbius, Möbius + linear, MLP mixings; .npz), and the
decomposition VAE's pinwheel, sprites (generated or dSprites .npz) and labelled .npz data."""

from ivae_ext.data.images import (
    ImageData,
    check_bernoulli_data,
    load_digits_binary,
    load_idx,
    load_image_data,
    load_npz_images,
    split_indices,
)
from ivae_ext.data.ima import IMAData, load_ima_data, load_ima_npz, make_ima_data
from ivae_ext.data.labelled import LabelledData, load_labelled_npz
from ivae_ext.data.npz import DataFormatError, load_npz
from ivae_ext.data.pinwheel import PinwheelData, make_pinwheel, pinwheel_arm_means
from ivae_ext.data.sprites import SpritesData, load_dsprites_npz, make_sprites, render_sprites
from ivae_ext.data.synthetic import NonlinearICAData, make_nonlinear_ica

__all__ = [
    "IMAData",
    "load_ima_data",
    "load_ima_npz",
    "make_ima_data",
    "NonlinearICAData",
    "make_nonlinear_ica",
    "load_npz",
    "DataFormatError",
    "ImageData",
    "check_bernoulli_data",
    "load_digits_binary",
    "load_idx",
    "load_image_data",
    "load_npz_images",
    "split_indices",
    "PinwheelData",
    "make_pinwheel",
    "pinwheel_arm_means",
    "SpritesData",
    "make_sprites",
    "render_sprites",
    "load_dsprites_npz",
    "LabelledData",
    "load_labelled_npz",
]
