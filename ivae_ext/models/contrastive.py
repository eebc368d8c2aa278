"""Segment-contrastive initialisation of an iVAE: fit the encoder's mean and the prior p(z|u) so
that the prior, evaluated at the encoded points, tells which segment each point came from.

Why: with Laplace sources whose segments also shift the mean, ELBO training from a random start
settles in local optima whose latents are a nonlinear mix of the sources (MCC about 0.6–0.75 on
data seeds 6–10), and the linear segment unmixing cannot undo that. A classification loss on the
encoder alone has no decoder to get stuck with, and its optimum is the right one: for segments m
with frequencies π_m, Bayes' rule gives

    log p(u = m | z) = log p(z | u = m) + log π_m − logsumexp_k [log p(z | u = k) + log π_k],

which, with z = s and the true p(s|u), is the Bayes-optimal segment classifier. This is
generalized contrastive learning (Hyvärinen, Sasaki & Turner, AISTATS 2019), whose optimum
identifies the sources when the segments vary their distributions enough; here the classifier is
the iVAE's own factorized prior, so the pretrained prior table is also the prior's initial value.
Measured on data seeds 6–10 (Laplace sources with segment means, 30 epochs at lr 3e-2): the
encoder's MCC reaches 0.76–0.98 from random initialisations; the cross-entropy ends at
0.76–1.17 nats against 0.66–0.74 for the true sources and prior.

Needs one-hot u. Useful when the prior has a learned location: with zero-mean symmetric segment
densities the classifier only sees |z_j|, so it cannot tell a source from a folded copy of it.
"""

from __future__ import annotations

import math
import time

import torch

from ivae_ext.data.segments import segment_labels
from ivae_ext.models.nets import linear_layers, log_density, regress


def segment_logits(model, z: torch.Tensor, log_frequency: torch.Tensor) -> torch.Tensor:
    """[B, M]: log p(z | u = e_m) under ``model``'s prior plus log π_m (unnormalised log p(u = m | z))."""
    n_segments = log_frequency.shape[0]
    loc, log_scale = model.prior_params(torch.eye(n_segments, dtype=z.dtype))
    log_pz = log_density(z[:, None, :], loc[None], log_scale[None], model.prior_family).sum(-1)
    return log_pz + log_frequency


def _one_hot_labels(u: torch.Tensor, n: int) -> torch.Tensor:
    if u.ndim != 2 or u.shape[0] != n:
        raise ValueError(f"u must be [N, M] one-hot with N = {n} rows like x, got shape {tuple(u.shape)}")
    labels = segment_labels(u.detach().cpu().numpy())
    if labels is None:
        raise ValueError("contrastive pretraining needs discrete segments: every row of u must be one-hot")
    return torch.as_tensor(labels, device=u.device)


def contrastive_pretrain(model, x: torch.Tensor, u: torch.Tensor, *, epochs: int = 30, batch_size: int = 256,
                         lr: float = 3e-2, seed: int = 0, decoder_steps: int = 500, progress: bool = False) -> dict:
    """Pretrain ``model`` (an IVAE) in place by segment classification, then fit its decoder.

    1. The encoder's mean, fed [x, 0] (or x if the encoder has no u input), and the prior net λ(u)
       minimise the cross-entropy of ``segment_logits`` against each point's segment (Adam with
       cosine decay from `lr`, minibatches shuffled with `seed`).
    2. The encoder's u-columns are set to zero, so the encoder gives the same mean with the real u.
    3. The decoder is regressed onto (encoder mean → x) for `decoder_steps` Adam steps, so the ELBO
       training that follows starts from a consistent model. The posterior variance heads keep
       their initialisation.

    Returns {"loss": cross-entropy per epoch, "decoder_fit_error", "seconds"}.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    x = torch.as_tensor(x)
    u = torch.as_tensor(u, dtype=x.dtype)
    labels = _one_hot_labels(u, len(x))
    if u.shape[1] != model.aux_dim:
        raise ValueError(f"u has {u.shape[1]} columns but the model's prior takes aux_dim = {model.aux_dim}")
    t0 = time.perf_counter()
    counts = torch.bincount(labels, minlength=u.shape[1]).to(x.dtype)
    log_frequency = torch.log(counts / counts.sum())  # −inf for an empty segment: it is never predicted
    inputs = torch.cat([x, torch.zeros_like(u)], dim=1) if model.encoder_uses_u else x
    params = list(model.encoder_loc.parameters()) + list(model.prior_net.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * math.ceil(len(x) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="contrastive pretraining", unit="epoch", leave=False)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            logits = segment_logits(model, model.encoder_loc(inputs[idx]), log_frequency)
            loss = torch.nn.functional.cross_entropy(logits, labels[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"contrastive pretraining: the cross-entropy became {float(loss.detach())} in epoch {epoch + 1}; "
                    "try a smaller lr or check x for extreme values"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(cross_entropy=f"{losses[-1]:.4g}")
    if bar is not None:
        bar.close()
    with torch.no_grad():
        if model.encoder_uses_u:
            linear_layers(model.encoder_loc)[0].weight[:, x.shape[1]:] = 0.0
        z = model.encoder_loc(inputs)
    error = regress(model.decoder, z, x, decoder_steps, seed) if decoder_steps > 0 else None
    return {"loss": losses, "decoder_fit_error": error, "seconds": time.perf_counter() - t0}
