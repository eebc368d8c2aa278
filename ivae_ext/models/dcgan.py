"""DCGAN-style convolutional encoder and decoder for 32 × 32 single-channel images.

The architecture of the decomposition-VAE anchor's Fashion-MNIST model (the sparsity experiment):
encoder Conv 1→32→64→128 (kernel 4, stride 2, padding 1; batch norm on the second and third;
LeakyReLU 0.2) then a 4 × 4 convolution to the location and raw scale; decoder a 4 × 4 transposed
convolution from the latent to 128 channels, then 128→64→32→1 (kernel 4, stride 2, padding 1; batch
norm and ReLU between), no output activation. Both take and give flat [B, 1024] tensors, so they
plug into the same data path as the MLPs.
"""

from __future__ import annotations

from torch import nn

SIDE = 32  # the networks' image side: three stride-2 layers and a 4 × 4 head


class DCGANEncoder(nn.Module):
    """[B, 1024] (a 32 × 32 image, flattened) → [B, 2·latent_dim] (location and raw scale)."""

    def __init__(self, latent_dim: int, width: int = 32):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2),
        )
        self.head = nn.Conv2d(4 * width, 2 * latent_dim, 4, 1, 0)

    def forward(self, x):
        if x.dim() != 2 or x.shape[1] != SIDE * SIDE:
            raise ValueError(f"DCGANEncoder: x must be [B, {SIDE * SIDE}] (32 × 32 images, flattened), "
                             f"got {list(x.shape)}")
        return self.head(self.trunk(x.reshape(len(x), 1, SIDE, SIDE))).flatten(1)


class DCGANDecoder(nn.Module):
    """z [B, latent_dim] → the likelihood's location (or logits) [B, 1024]."""

    def __init__(self, latent_dim: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * width, 4, 1, 0), nn.BatchNorm2d(4 * width), nn.ReLU(),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
        )

    def forward(self, z):
        return self.net(z[:, :, None, None]).flatten(1)


__all__ = ["DCGANEncoder", "DCGANDecoder", "SIDE"]
