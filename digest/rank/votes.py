"""The per-subscriber vote model behind digest.rank: an L2-regularised logistic regression on the paper vectors, the
subscriber's seed and liked papers against their disliked ones and the day's average paper, fitted for every voting
subscriber of a chunk at once. Pure numpy: no database, no clock, no I/O.

Why not one scikit-learn LogisticRegression per subscriber (as arxiv-sanity-lite fits one SVM per user): a fit on
a handful of papers costs about 1.5 ms here, almost all of it input checking, so 20,000 voting subscribers would
add 30 s to a daily run. The model is the same one (sklearn's objective: C x the weighted log loss + |w|^2 / 2, the
intercept not penalised; tests/test_rank_votes.py checks the fit against LogisticRegression), solved in its kernel
form: the weights are a combination of the training papers (representer theorem), so a few batched Newton steps on
(votes x votes) systems replace the fits, and the decision on a candidate is a weighted sum of the similarities the
ranking computes anyway. Papers that were sent and not voted on are not training data: silence is not a dislike.
"""

from __future__ import annotations

import numpy as np

NEWTON_STEPS = 6  # these small, regularised problems converge in 4 (tests check the fit against scikit-learn)


def fit_votes(kernel: np.ndarray, labels: np.ndarray, weights: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Batched kernel logistic regression: for each problem p, `kernel[p]` (m x m) holds the inner products of its
    training vectors, `labels[p]` 1 (liked) or 0, `weights[p]` each vector's sample weight (0 for padding).
    Returns (alpha (P x m), bias (P,)): the decision on x is sum_i alpha_i <x, x_i> + bias, as sklearn's
    LogisticRegression(C=c).fit(X, y, sample_weight).decision_function(x) would give with X's rows the x_i."""
    problems, m = labels.shape
    lam = 1.0 / c
    alpha = np.zeros((problems, m))
    bias = np.zeros(problems)
    kernel = kernel.astype(np.float64)
    eye = np.eye(m)
    for _ in range(NEWTON_STEPS):
        f = np.einsum("pij,pj->pi", kernel, alpha) + bias[:, None]
        sigma = 1.0 / (1.0 + np.exp(-f))
        residual = weights * (sigma - labels)
        curvature = weights * sigma * (1.0 - sigma)
        # Newton on (alpha, bias): with g = residual + lam * alpha (the gradient in alpha is K @ g),
        # [[W K + lam I, W 1], [1' W K, 1' W 1]] [d_alpha; d_bias] = -[g; sum(residual)], valid for a singular K too.
        system = np.empty((problems, m + 1, m + 1))
        system[:, :m, :m] = curvature[:, :, None] * kernel + lam * eye
        system[:, :m, m] = curvature
        system[:, m, :m] = np.einsum("pi,pij->pj", curvature, kernel)
        system[:, m, m] = curvature.sum(axis=1) + 1e-9
        rhs = -np.concatenate([residual + lam * alpha, residual.sum(axis=1, keepdims=True)], axis=1)
        step = np.linalg.solve(system, rhs[:, :, None])[:, :, 0]
        alpha += step[:, :m]
        bias += step[:, m]
    return alpha, bias
