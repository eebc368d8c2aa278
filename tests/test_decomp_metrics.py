"""Decomposition-VAE metrics: Hoyer sparsity, clustering accuracy/NMI/ARI, Kim & Mnih disentanglement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ivae_ext.data import make_pinwheel, make_sprites
from ivae_ext.distributions import GaussianMixture, circle_means
from ivae_ext.metrics import cluster_accuracy, clustering_scores, disentanglement_score, hoyer_sparsity

# ------------------------------------------------------------------ Hoyer


def test_hoyer_of_one_hot_codes_is_one_and_of_constant_codes_is_zero():
    one_hot = torch.eye(5).repeat(4, 1) * 3.0
    assert hoyer_sparsity(one_hot) == pytest.approx(1.0)
    constant = torch.linspace(0.5, 2.0, 20)[:, None] * torch.ones(20, 5)  # every code (c, c, ..., c)
    assert hoyer_sparsity(constant) == pytest.approx(0.0, abs=1e-12)


def test_hoyer_without_normalisation_matches_the_formula():
    z = np.array([[1.0, 2.0, 0.0], [3.0, -1.0, 1.0]])
    want = np.mean([(math.sqrt(3) - np.abs(r).sum() / np.linalg.norm(r)) / (math.sqrt(3) - 1) for r in z])
    assert hoyer_sparsity(z, normalise=False) == pytest.approx(want)


def test_hoyer_normalisation_removes_per_latent_scale():
    z = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    scaled = z * torch.tensor([1.0, 10.0, 0.1, 3.0])
    assert hoyer_sparsity(scaled) == pytest.approx(hoyer_sparsity(z))
    assert hoyer_sparsity(scaled, normalise=False) != pytest.approx(hoyer_sparsity(z, normalise=False))


def test_sparse_codes_score_higher_than_dense_ones():
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn(500, 10, generator=gen)
    sparse = dense * (torch.rand(500, 10, generator=gen) < 0.2)
    sparse[:, 0] += 1e-3  # no all-zero codes
    assert hoyer_sparsity(sparse) > hoyer_sparsity(dense) + 0.2


@pytest.mark.parametrize(
    "z, match",
    [(np.ones((4, 1)), "d >= 2"), (np.array([[1.0, 0.0], [2.0, 0.0]]), "constant"),
     (np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]]), "all zero"), (np.array([[np.nan, 1.0], [1.0, 2.0]]), "NaN"),
     (np.ones(4), "2-D")],
)
def test_hoyer_errors(z, match):
    with pytest.raises(ValueError, match=match):
        hoyer_sparsity(z)


# ------------------------------------------------------------------ clustering


def test_cluster_accuracy_is_invariant_to_renaming_clusters():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([5, 5, 7, 7, 7, 9, 9, 9, 5])
    acc, matching = cluster_accuracy(pred, labels)
    assert acc == pytest.approx(7 / 9)  # 2 + 2 + 3 points in matched clusters
    assert matching == {5: 0, 7: 1, 9: 2}
    perm = {5: 9, 7: 5, 9: 7}
    assert cluster_accuracy(np.array([perm[p] for p in pred]), labels)[0] == pytest.approx(acc)
    assert cluster_accuracy(labels, labels)[0] == 1.0


def test_more_clusters_than_labels_counts_unmatched_as_wrong():
    acc, matching = cluster_accuracy(np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1]))
    assert acc == pytest.approx(0.5) and len(matching) == 2


def test_clustering_scores_under_the_prior_components():
    means = circle_means(4, radius=2.0).double()
    prior = GaussianMixture(means, 0.2)
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    z = means[(labels + 1) % 4] + 0.2 * torch.randn(400, 2, generator=gen, dtype=torch.float64)  # shifted names
    scores = clustering_scores(z, labels, prior)
    assert scores.accuracy > 0.99 and scores.nmi > 0.95 and scores.ari > 0.95
    assert scores.assignment.shape == (400,)
    noise = clustering_scores(torch.randn(400, 2, generator=gen) * 0.01, labels, prior)  # all near the origin
    assert noise.accuracy < 0.4 and noise.ari < 0.05


def test_clustering_scores_on_pinwheel_features_directions():
    d = make_pinwheel(n_test=400, seed=0)
    # the arms' mean directions as components: points fall in their own arm's component
    means = torch.stack([d.x_test[d.y_test == k].mean(0) for k in range(4)]).double()
    scores = clustering_scores(d.x_test, d.y_test, GaussianMixture(means, 0.3))
    assert scores.accuracy > 0.9


def test_clustering_errors():
    prior = GaussianMixture(circle_means(3), 0.2)
    with pytest.raises(ValueError, match="labels"):
        clustering_scores(torch.zeros(5, 2), torch.zeros(4, dtype=torch.int64), prior)
    with pytest.raises(ValueError, match="labels"):
        clustering_scores(torch.zeros(5, 2), torch.zeros(5), prior)  # float labels
    with pytest.raises(TypeError, match="responsibilities"):
        clustering_scores(torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64), object())


# ------------------------------------------------------------------ Kim & Mnih


def _factor_sampler(sizes):
    """x = the factor values themselves; one factor fixed to a random value."""

    def sample(k, n, rng):
        x = np.stack([rng.integers(0, m, n) for m in sizes], axis=1).astype(np.float64)
        x[:, k] = rng.integers(0, sizes[k])
        return x

    return sample


SIZES = (3, 6, 10, 8)


def _data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, m, n) for m in SIZES], axis=1).astype(np.float64)


def test_encoder_that_outputs_the_factors_scores_one():
    rng = np.random.default_rng(1)

    def encode(x):  # factors (permuted and rescaled) plus two noise latents and a collapsed one
        n = len(x)
        return np.concatenate([x[:, [2, 0, 3, 1]] * [0.1, 5.0, 1.0, 2.0], rng.standard_normal((n, 2)), np.zeros((n, 1))], 1)

    result = disentanglement_score(encode, _factor_sampler(SIZES), len(SIZES), encode(_data()),
                                   n_train_votes=200, n_eval_votes=200, batch_size=32)
    assert result.score == 1.0 and result.train_accuracy == 1.0
    assert result.active.tolist() == [True] * 6 + [False], "the constant latent must be pruned"
    assert result.dim_to_factor[:4].tolist() == [2, 0, 3, 1] and result.dim_to_factor[6] == -1
    assert result.votes.sum() == 200


def test_random_encoder_scores_about_chance():
    rng = np.random.default_rng(2)

    def encode(x):
        return rng.standard_normal((len(x), 6))

    result = disentanglement_score(encode, _factor_sampler(SIZES), len(SIZES), encode(_data()),
                                   n_train_votes=400, n_eval_votes=400, batch_size=32, seed=3)
    assert abs(result.score - 1 / len(SIZES)) < 0.1, result.score
    assert result.train_accuracy >= result.score - 0.05  # majority vote fits its own votes


def test_every_latent_collapsed_scores_zero():
    result = disentanglement_score(lambda x: np.zeros((len(x), 3)), _factor_sampler(SIZES), len(SIZES),
                                   np.zeros((50, 3)), n_train_votes=5, n_eval_votes=5)
    assert result.score == 0.0 and not result.active.any()


def test_disentanglement_on_procedural_sprites_with_a_position_encoder():
    data = make_sprites(n=500, seed=0)

    def encode(x):  # centroid of the lit pixels: recovers pos_x and pos_y only
        img = torch.as_tensor(x)[:, 0]
        grid = torch.arange(img.shape[-1], dtype=torch.float32)
        mass = img.sum((1, 2))
        return torch.stack([(img.sum(1) * grid).sum(1) / mass, (img.sum(2) * grid).sum(1) / mass], 1).numpy()

    result = disentanglement_score(encode, data.sample_fixed_factor, 5, encode(data.images),
                                   n_train_votes=100, n_eval_votes=100, batch_size=32)
    assert result.dim_to_factor.tolist() == [3, 4]
    assert 0.3 < result.score < 0.5  # two of five factors are captured: accuracy ≈ 2/5


def test_disentanglement_errors():
    sample = _factor_sampler(SIZES)
    with pytest.raises(ValueError, match="n_train_votes"):
        disentanglement_score(lambda x: x, sample, 4, _data(), n_train_votes=0)
    with pytest.raises(ValueError, match="z_data"):
        disentanglement_score(lambda x: x, sample, 4, np.zeros(5))
    with pytest.raises(ValueError, match="must have shape"):
        disentanglement_score(lambda x: x[:, :2], sample, 4, _data(), n_train_votes=2, n_eval_votes=2)
    with pytest.raises(TypeError, match="callables"):
        disentanglement_score(None, sample, 4, _data())
