"""digest.rank.votes: the batched vote model is scikit-learn's LogisticRegression, fitted for many subscribers at once."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

from digest.rank.votes import fit_votes


def problem(seed: int, liked: int, disliked: int, dimensions: int = 40):
    rng = np.random.default_rng(seed)
    rows = liked + disliked + 1
    vectors = normalize(np.abs(rng.normal(size=(rows, dimensions))) * (rng.random((rows, dimensions)) < 0.3) + 1e-3)
    labels = np.array([1.0] * liked + [0.0] * (disliked + 1))
    weights = np.array([1.0] * (liked + disliked) + [3.0])  # the last row stands for the day's average paper
    candidates = normalize(np.abs(rng.normal(size=(25, dimensions))))
    return vectors, labels, weights, candidates


@pytest.mark.parametrize("liked, disliked, c", [(1, 0, 1.0), (3, 3, 1.0), (5, 1, 10.0), (2, 4, 0.3)], ids=["one-seed", "three-each", "many-likes", "mostly-dislikes"])
def test_fit_votes_gives_sklearns_logistic_regression(liked, disliked, c):
    vectors, labels, weights, candidates = problem(liked * 10 + disliked, liked, disliked)
    reference = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(vectors, labels, sample_weight=weights)
    alpha, bias = fit_votes((vectors @ vectors.T)[None], labels[None], weights[None], c)
    assert candidates @ vectors.T @ alpha[0] + bias[0] == pytest.approx(reference.decision_function(candidates), abs=1e-6)


def test_fit_votes_batches_problems_of_different_sizes_with_padding():
    small, big = problem(1, 1, 0), problem(2, 4, 2)
    width = len(big[1])
    kernel, labels, weights = np.zeros((2, width, width)), np.zeros((2, width)), np.zeros((2, width))
    for p, (vectors, y, w, _) in enumerate((small, big)):
        m = len(y)
        kernel[p, :m, :m], labels[p, :m], weights[p, :m] = vectors @ vectors.T, y, w  # the rest: weight 0
    alpha, bias = fit_votes(kernel, labels, weights, 1.0)
    for p, (vectors, y, w, candidates) in enumerate((small, big)):
        alone, alone_bias = fit_votes((vectors @ vectors.T)[None], y[None], w[None], 1.0)
        m = len(y)
        assert candidates @ vectors.T @ alpha[p, :m] + bias[p] == pytest.approx(candidates @ vectors.T @ alone[0] + alone_bias[0], abs=1e-9)
        assert not alpha[p, m:].any()  # padding stays out of the model
