r"""Metrics of the decomposition VAE (Mathieu et al. 2019): how sparse, how clustered and how
disentangled the codes are. MCC against known factors is ``ivae_ext.metrics.mcc``.

- :func:`hoyer_sparsity`: the normalised Hoyer measure of posterior means, as the anchor's
  ``metrics.py``: divide each latent by its std over the data (no centring), then average over
  points (√d − ‖z‖₁/‖z‖₂)/(√d − 1) — 1 for one-hot codes, 0 for constant ones.
- :func:`clustering_scores`: assign each code to the prior component of highest responsibility,
  match components to true labels one-to-one (Hungarian), report accuracy, NMI and ARI.
- :func:`disentanglement_score`: Kim & Mnih (2018)'s majority-vote score with the two things the
  anchor skips: collapsed latents pruned and the classifier scored on held-out votes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["hoyer_sparsity", "cluster_accuracy", "ClusteringScores", "clustering_scores", "DisentanglementScore",
           "disentanglement_score"]


def _matrix(name: str, z) -> np.ndarray:
    if hasattr(z, "detach"):
        z = z.detach().cpu().numpy()
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array [N, d], got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError(f"{name} has NaN or inf values")
    return z


def _labels(name: str, y, n: int) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be integer labels of shape [{n}], got {y.dtype} array of shape {y.shape}")
    return y.astype(np.int64)


# ------------------------------------------------------------------------------- Hoyer


def hoyer_sparsity(z, normalise: bool = True) -> float:
    """Mean normalised Hoyer sparsity of codes z [N, d] (d >= 2), in [0, 1].

    normalise divides each latent by its std over the N points (ddof 1, as the anchor), so that a
    latent with a large spread does not count as "the active one" everywhere; a latent with zero
    spread is then an error (drop it first). An all-zero code has no Hoyer value: also an error.
    """
    z = _matrix("z", z)
    n, d = z.shape
    if d < 2:
        raise ValueError(f"hoyer_sparsity needs d >= 2 latents, got d = {d}")
    if normalise:
        if n < 2:
            raise ValueError("normalise=True needs N >= 2 points to estimate each latent's std")
        std = z.std(axis=0, ddof=1)
        if (std == 0).any():
            raise ValueError(f"latents {np.flatnonzero(std == 0)[:10].tolist()} are constant over the data (std 0): "
                             "drop them or pass normalise=False")
        z = z / std
    l2 = np.linalg.norm(z, axis=1)
    if (l2 == 0).any():
        raise ValueError(f"{int((l2 == 0).sum())} code(s) are all zero: the Hoyer measure is undefined for them")
    l1 = np.abs(z).sum(axis=1)
    return float(np.mean((math.sqrt(d) - l1 / l2) / (math.sqrt(d) - 1)))


# ------------------------------------------------------------------------------- clustering


def cluster_accuracy(pred, labels) -> tuple[float, dict[int, int]]:
    """Fraction of points whose cluster, under the best one-to-one cluster → label matching, is right.

    Returns (accuracy, matching {cluster: label}); clusters left unmatched (more clusters than
    labels) count as wrong. Invariant to renaming either side.
    """
    pred = _labels("pred", pred, len(np.asarray(pred)))
    labels = _labels("labels", labels, len(pred))
    if len(pred) == 0:
        raise ValueError("cluster_accuracy needs at least one point")
    p_values, p_idx = np.unique(pred, return_inverse=True)
    l_values, l_idx = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(p_values), len(l_values)), dtype=np.int64)
    np.add.at(counts, (p_idx, l_idx), 1)
    rows, cols = linear_sum_assignment(-counts)
    matching = {int(p_values[r]): int(l_values[c]) for r, c in zip(rows, cols)}
    return float(counts[rows, cols].sum() / len(pred)), matching


@dataclass(frozen=True)
class ClusteringScores:
    """accuracy (best matching), nmi and ari (scikit-learn), assignment [N] (component per point)."""

    accuracy: float
    nmi: float
    ari: float
    assignment: np.ndarray
    matching: dict[int, int]


def clustering_scores(z, labels, prior) -> ClusteringScores:
    """Cluster codes z [N, d] by the prior's components (a GaussianMixture, or anything with
    ``responsibilities(z) -> [N, K]``) and score against true labels [N]."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if not hasattr(prior, "responsibilities"):
        raise TypeError(f"prior must have responsibilities(z) (e.g. a GaussianMixture), got {type(prior).__name__}")
    z_np = _matrix("z", z)
    labels = _labels("labels", labels, len(z_np))
    dtype = getattr(prior, "means", torch.empty(0)).dtype
    with torch.no_grad():
        resp = prior.responsibilities(torch.as_tensor(z_np, dtype=dtype))
    assignment = resp.argmax(-1).cpu().numpy().astype(np.int64)
    accuracy, matching = cluster_accuracy(assignment, labels)
    return ClusteringScores(accuracy, float(normalized_mutual_info_score(labels, assignment)),
                            float(adjusted_rand_score(labels, assignment)), assignment, matching)


# ------------------------------------------------------------------------------- Kim & Mnih


@dataclass(frozen=True)
class DisentanglementScore:
    """score: held-out accuracy of the majority-vote classifier (0 when every latent is pruned);
    train_accuracy: the same on the training votes (the anchor's number); votes [d, K] training
    vote counts; active [d] the latents kept; dim_to_factor [d] the classifier (−1 if pruned)."""

    score: float
    train_accuracy: float
    votes: np.ndarray
    active: np.ndarray
    dim_to_factor: np.ndarray


def _vote_matrix(encode, sample_fixed_factor, n_factors, n_votes, batch_size, scale, active, rng):
    votes = np.zeros((len(active), n_factors), dtype=np.int64)
    active_idx = np.flatnonzero(active)
    for _ in range(n_votes):
        k = int(rng.integers(n_factors))
        z = _matrix("encode(x)", encode(sample_fixed_factor(k, batch_size, rng)))
        if z.shape != (batch_size, len(active)):
            raise ValueError(f"encode(sample_fixed_factor(k, {batch_size}, rng)) must have shape "
                             f"[{batch_size}, {len(active)}] (as z_data), got {z.shape}")
        local = (z[:, active_idx] / scale[active_idx]).var(axis=0, ddof=1)
        votes[active_idx[np.argmin(local)], k] += 1
    return votes


def disentanglement_score(encode: Callable, sample_fixed_factor: Callable, n_factors: int, z_data, *,
                          n_train_votes: int = 800, n_eval_votes: int = 400, batch_size: int = 64,
                          prune_threshold: float = 0.05, seed: int = 0) -> DisentanglementScore:
    """Kim & Mnih (2018) majority-vote disentanglement of an encoder, with held-out votes.

    encode(x) -> codes [L, d] (posterior means); sample_fixed_factor(k, L, rng) -> x: L data points
    sharing one (randomly chosen) value of factor k, the other factors random — e.g.
    ``SpritesData.sample_fixed_factor``. z_data [N, d]: codes of the data set, giving each latent's
    global std; latents whose std is below prune_threshold are collapsed and never vote.
    One vote: pick k uniformly, encode L points with k fixed, divide by the global std, and the
    latent of least variance votes for k. Latent → factor is the majority of the training votes;
    the score is its accuracy on independent evaluation votes (chance ≈ 1 / n_factors).
    """
    for name, value, low in (("n_factors", n_factors, 1), ("n_train_votes", n_train_votes, 1),
                             ("n_eval_votes", n_eval_votes, 1), ("batch_size", batch_size, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not callable(encode) or not callable(sample_fixed_factor):
        raise TypeError("encode and sample_fixed_factor must be callables")
    z_data = _matrix("z_data", z_data)
    if len(z_data) < 2:
        raise ValueError("z_data needs at least 2 codes to estimate each latent's std")
    if not (isinstance(prune_threshold, (int, float)) and prune_threshold >= 0):
        raise ValueError(f"prune_threshold must be a number >= 0, got {prune_threshold!r}")
    scale = z_data.std(axis=0, ddof=1)
    active = scale >= prune_threshold
    active &= scale > 0
    d = z_data.shape[1]
    if not active.any():
        empty = np.zeros((d, n_factors), dtype=np.int64)
        return DisentanglementScore(0.0, 0.0, empty, active, np.full(d, -1))
    rng = np.random.default_rng(seed)
    args = (encode, sample_fixed_factor, n_factors)
    with torch.no_grad():
        train = _vote_matrix(*args, n_train_votes, batch_size, scale, active, rng)
        held_out = _vote_matrix(*args, n_eval_votes, batch_size, scale, active, rng)
    dim_to_factor = np.where(active, train.argmax(axis=1), -1)
    rows = np.flatnonzero(active)

    def accuracy(votes):
        return float(votes[rows, dim_to_factor[rows]].sum() / votes.sum())

    return DisentanglementScore(accuracy(held_out), accuracy(train), train, active, dim_to_factor)
