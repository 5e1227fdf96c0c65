"""The Gibbs sampler's compiled loops against plain NumPy on tiny cases."""

import numpy as np
import pytest

from collabkit.training.bayes import _Csr, _kernels


def _case(seed=0, n_rows=5, n_cols=7, d=3):
    rng = np.random.default_rng(seed)
    rows = np.array([0, 0, 1, 1, 1, 2, 4, 4, 4, 4], dtype=np.int64)  # row 3 has no ratings
    cols = np.array([1, 4, 0, 2, 6, 3, 1, 2, 5, 6], dtype=np.int64)
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
    csr = _Csr(rows, cols, r, n_rows)
    out, means, errors = np.empty((n_rows, d)), np.empty((n_rows, d)), np.empty(n_rows)
    _kernels().draw_rows(csr.crow, csr.col, csr.values, a, b, others, prec, prec @ mean, noise, out, means, errors)
    for u in range(n_rows):
        mine = rows == u
        w = a[u] * b[cols[mine]]
        o = others[cols[mine]]
        P = prec + (o * w[:, None]).T @ o
        m = np.linalg.solve(P, prec @ mean + o.T @ (w * r[mine]))
        np.testing.assert_allclose(means[u], m, rtol=1e-10, atol=1e-12)
        chol = np.linalg.cholesky(P)
        expected = m + np.linalg.solve(chol.T, noise[u])  # N(m, P⁻¹): Cov(L⁻ᵀ z) = P⁻¹
        np.testing.assert_allclose(out[u], expected, rtol=1e-10, atol=1e-12)
        squared = b[cols[mine]] * (r[mine] - o @ out[u]) ** 2  # weighted by the columns' b only
        np.testing.assert_allclose(errors[u], squared.sum(), rtol=1e-9, atol=1e-12)


def test_add_predictions():
    rows, cols, r, others, *_ = _case(1)
    U = np.random.default_rng(2).normal(size=(5, others.shape[1]))
    sums = np.ones(len(r))
    _kernels().add_predictions(rows, cols, U, others, sums)
    np.testing.assert_allclose(sums, 1 + (U[rows] * others[cols]).sum(1), rtol=1e-12)


def test_normal_wishart_is_bartletts_construction():
    rng = np.random.default_rng(3)
    n, d, beta0 = 20, 3, 2.0
    X = rng.normal(size=(n, d)) + 0.5
    z, chi2 = rng.normal(size=(d + 1, d)), rng.chisquare(d + n - np.arange(d))
    mean_out, prec_out = np.empty(d), np.empty((d, d))
    _kernels().normal_wishart(X, beta0, z, chi2, mean_out, prec_out)
    xbar = X.mean(0)
    S = np.eye(d) + (X - xbar).T @ (X - xbar) + beta0 * n / (beta0 + n) * np.outer(xbar, xbar)
    C = np.linalg.cholesky(S)
    A = np.tril(z[:d], -1) + np.diag(np.sqrt(chi2))
    root = np.linalg.solve(C.T, A)  # F A with F Fᵀ = S⁻¹
    precision = root @ root.T
    np.testing.assert_allclose(prec_out, precision, rtol=1e-10)
    factor = np.linalg.cholesky((beta0 + n) * precision)
    expected_mean = n * xbar / (beta0 + n) + np.linalg.solve(factor.T, z[d])
    np.testing.assert_allclose(mean_out, expected_mean, rtol=1e-10)


def test_wishart_draws_have_the_right_mean():
    """E[Λ] = df · S⁻¹ for Wishart(df, S⁻¹): the Bartlett draw, averaged."""
    rng = np.random.default_rng(4)
    n, d = 6, 2
    X = rng.normal(size=(n, d))
    xbar = X.mean(0)
    S = np.eye(d) + (X - xbar).T @ (X - xbar) + 2.0 * n / (2.0 + n) * np.outer(xbar, xbar)
    total = np.zeros((d, d))
    mean_out, prec_out = np.empty(d), np.empty((d, d))
    draws = 20000
    for _ in range(draws):
        _kernels().normal_wishart(X, 2.0, rng.normal(size=(d + 1, d)), rng.chisquare(d + n - np.arange(d)),
                                  mean_out, prec_out)
        total += prec_out
    np.testing.assert_allclose(total / draws, (d + n) * np.linalg.inv(S), rtol=0.03)


def test_fit_is_reproducible_whatever_the_thread_count(planted):
    """The sampler runs on one thread and draws its numbers from one seeded generator."""
    import torch

    from collabkit.training.recipe import TrainConfig, train

    frame = planted.sample(frac=1.0, random_state=0)
    config = TrainConfig(solver="bayes", n_factors=4, sweeps=12, burn_in=4, thin=2, seed=0, threads=2)
    learn = train(config, frame.iloc[:4000], frame.iloc[4000:5000])
    reference = train(config.replace(threads=1), frame.iloc[:4000], frame.iloc[4000:5000])
    other_seed = train(config.replace(seed=1), frame.iloc[:4000], frame.iloc[4000:5000])
    torch.testing.assert_close(learn.model.u_weight.weight, reference.model.u_weight.weight, rtol=0, atol=0)
    assert not torch.allclose(learn.model.u_weight.weight, other_seed.model.u_weight.weight)
