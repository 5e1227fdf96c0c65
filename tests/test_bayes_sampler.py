"""The Gibbs sampler's pieces against plain NumPy on tiny cases, and the fit's reproducibility."""

import numpy as np
import pytest
import torch

from collabkit.errors import TrainingDivergedError
from collabkit.training import bayes
from collabkit.training.bayes import Ratings, draw_rows, normal_wishart


def _case(seed=0, n_rows=5, n_cols=7, d=3):
    rng = np.random.default_rng(seed)
    rows = np.array([4, 0, 1, 1, 1, 2, 4, 4, 4, 0], dtype=np.int64)  # row 3 has no ratings; rows out of order
    cols = np.array([1, 4, 0, 2, 6, 3, 2, 5, 6, 1], dtype=np.int64)
    r = rng.normal(size=len(rows))
    others = rng.normal(size=(n_cols, d))
    a, b = rng.gamma(2.0, size=n_rows), rng.gamma(2.0, size=n_cols)
    L = rng.normal(size=(d, d))
    prec = L @ L.T + d * np.eye(d)
    mean = rng.normal(size=d)
    noise = rng.normal(size=(n_rows, d))
    return rows, cols, r, others, a, b, prec, mean, noise


def test_draw_rows_is_the_gaussian_conditional():
    rows, cols, r, others, a, b, prec, mean, noise = _case()
    n_rows, d = noise.shape
    side = Ratings(rows, cols, r, n_rows, len(others))
    t = torch.from_numpy
    draws, means, errors = draw_rows(side, t(others), t(a), t(b), t(prec), t(prec @ mean), t(noise))
    for u in range(n_rows):
        mine = rows == u
        w = a[u] * b[cols[mine]]
        o = others[cols[mine]]
        P = prec + (o * w[:, None]).T @ o
        m = np.linalg.solve(P, prec @ mean + o.T @ (w * r[mine]))
        np.testing.assert_allclose(means[u].numpy(), m, rtol=1e-10, atol=1e-12)
        chol = np.linalg.cholesky(P)
        expected = m + np.linalg.solve(chol.T, noise[u])  # N(m, P⁻¹): Cov(L⁻ᵀ z) = P⁻¹
        np.testing.assert_allclose(draws[u].numpy(), expected, rtol=1e-10, atol=1e-12)
        squared = b[cols[mine]] * (r[mine] - o @ expected) ** 2  # weighted by the columns' b only
        np.testing.assert_allclose(errors[u].item(), squared.sum(), rtol=1e-9, atol=1e-12)
    assert errors[3].item() == 0.0


def test_ratings_sides_hold_each_rating_once():
    rows, cols, r, others, *_ = _case(1)
    side = Ratings(rows, cols, r, 5, len(others))
    dense = np.zeros((5, len(others)))
    dense[rows, cols] = r
    np.testing.assert_allclose(side.ratings.to_dense().numpy(), dense)
    np.testing.assert_allclose(side.squares.to_dense().numpy(), dense**2)
    np.testing.assert_allclose(side.ones.to_dense().numpy(), (dense != 0).astype(float))
    np.testing.assert_array_equal(side.counts, np.bincount(rows, minlength=5))


def test_normal_wishart_draws_have_the_right_means():
    """E[Λ] = df · S⁻¹ for Wishart(df, S⁻¹), and E[μ] = n x̄ / (β₀ + n): the Bartlett draws, averaged."""
    rng = np.random.default_rng(4)
    n, d, beta0 = 6, 2, 2.0
    X = rng.normal(size=(n, d)) + 1.0
    xbar = X.mean(0)
    S = np.eye(d) + (X - xbar).T @ (X - xbar) + beta0 * n / (beta0 + n) * np.outer(xbar, xbar)
    total_prec, total_mean = np.zeros((d, d)), np.zeros(d)
    draws = 20000
    for _ in range(draws):
        mean, prec = normal_wishart(X, beta0, rng.normal(size=(d + 1, d)), rng.chisquare(d + n - np.arange(d)))
        total_prec += prec
        total_mean += mean
    np.testing.assert_allclose(total_prec / draws, (d + n) * np.linalg.inv(S), rtol=0.03)
    np.testing.assert_allclose(total_mean / draws, n * xbar / (beta0 + n), atol=0.03)


def test_fit_is_reproducible_whatever_the_thread_count(planted):
    """The random numbers come from one seeded NumPy generator, drawn in a fixed order."""
    from collabkit.training.recipe import TrainConfig, train

    frame = planted.sample(frac=1.0, random_state=0)
    config = TrainConfig(solver="bayes", n_factors=4, sweeps=12, burn_in=4, thin=2, seed=0, threads=2)
    learn = train(config, frame.iloc[:4000], frame.iloc[4000:5000])
    reference = train(config.replace(threads=1), frame.iloc[:4000], frame.iloc[4000:5000])
    other_seed = train(config.replace(seed=1), frame.iloc[:4000], frame.iloc[4000:5000])
    torch.testing.assert_close(learn.model.u_weight.weight, reference.model.u_weight.weight, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(learn.model.u_weight.weight, other_seed.model.u_weight.weight)


def test_a_diverging_chain_stops_with_a_clear_error(planted, monkeypatch):
    from collabkit.training.recipe import TrainConfig, train

    real = bayes.draw_rows

    def blowing_up(side, *args):
        draws, means, errors = real(side, *args)
        return draws * float("nan"), means, errors

    monkeypatch.setattr(bayes, "draw_rows", blowing_up)
    config = TrainConfig(solver="bayes", n_factors=4, sweeps=6, burn_in=2, seed=0)
    with pytest.raises(TrainingDivergedError, match="the Gibbs sampler diverged"):
        train(config, planted.iloc[:2000], planted.iloc[2000:2500])
