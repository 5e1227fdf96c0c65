"""Compiled loops of the Gibbs sampler in :mod:`collabkit.training.bayes` (imported on first use).

numba compiles them once and caches the machine code beside this file
(``cache=True``); they see NumPy arrays only.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from collabkit.training import numba_threads  # noqa: F401 - numba's own thread pool, before any parallel loop

_JIT = {"cache": True, "fastmath": True, "error_model": "numpy", "nogil": True}


@numba.njit(inline="always", **_JIT)
def cholesky(P, inv):
    """``P = L Lᵀ``: L into P's lower triangle in place, ``1 / L_jj`` into ``inv``."""
    d = P.shape[0]
    for j in range(d):
        s = P[j, j]
        for q in range(j):
            s -= P[j, q] * P[j, q]
        s = np.sqrt(s)
        P[j, j] = s
        inv[j] = 1.0 / s
        for p in range(j + 1, d):
            t = P[p, j]
            for q in range(j):
                t -= P[p, q] * P[j, q]
            P[p, j] = t * inv[j]


@numba.njit(inline="always", **_JIT)
def gaussian(P, y, z, out, inv):
    """A draw from ``N(P⁻¹ y, P⁻¹)`` into ``out``, given ``z ~ N(0, I)``; P, y and ``inv`` (scratch) are overwritten.

    With ``P = L Lᵀ``: ``L y' = y`` forward, then ``Lᵀ x = y' + z`` backward, so
    ``x = P⁻¹ y + L⁻ᵀ z`` and ``Cov(L⁻ᵀ z) = (L Lᵀ)⁻¹``. Only P's lower triangle is read.
    """
    d = P.shape[0]
    cholesky(P, inv)
    for p in range(d):
        t = y[p]
        for q in range(p):
            t -= P[p, q] * y[q]
        y[p] = t * inv[p]
    for p in range(d - 1, -1, -1):
        t = y[p] + z[p]
        for q in range(p + 1, d):
            t -= P[q, p] * out[q]
        out[p] = t * inv[p]


@numba.njit(parallel=True, **_JIT)
def draw_rows(crow, col, r, a, b, others, prec, prec_mean, noise, out, resid, chunks):
    """Every row's draw from its Gaussian conditional; ``r`` holds the centred ratings.

    Row u's ratings k (column ``col[k]``, weight ``w_k = a[u] b[col[k]]``, ``o_k = others[col[k]]``):
    precision ``P = Λ + Σ_k w_k o_k o_kᵀ``, ``P m = Λμ + Σ_k w_k r_k o_k``; ``out[u] ~ N(m, P⁻¹)``
    with ``noise[u]`` as its N(0, I) draw. If ``resid`` is not empty, it gets the residuals
    ``r_k - out[u] · o_k`` of the new rows, in the same order as ``r``.
    """
    d = others.shape[1]
    residuals = resid.shape[0] > 0
    n_rows = out.shape[0]
    n_chunks = min(n_rows, chunks)  # rows are taken in chunks, each with its own scratch memory
    for chunk in prange(n_chunks):
        first, stop = chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks
        longest = 0
        for u in range(first, stop):
            longest = max(longest, crow[u + 1] - crow[u])
        X = np.empty((d, longest))  # a row's o_k as columns: each sum below runs over contiguous memory
        XW = np.empty((d, longest))
        wr = np.empty(longest)
        P = np.empty((d, d))
        y = np.empty(d)
        inv = np.empty(d)
        for u in range(first, stop):
            lo, hi = crow[u], crow[u + 1]
            m = hi - lo
            au = a[u]
            for k in range(m):
                i = col[lo + k]
                w = au * b[i]
                wr[k] = w * r[lo + k]
                for p in range(d):
                    X[p, k] = others[i, p]
                    XW[p, k] = w * others[i, p]
            for p in range(d):
                s = 0.0
                for k in range(m):
                    s += wr[k] * X[p, k]
                y[p] = prec_mean[p] + s
                for q in range(p + 1):
                    s = 0.0
                    for k in range(m):
                        s += XW[p, k] * X[q, k]
                    P[p, q] = prec[p, q] + s
            gaussian(P, y, noise[u], out[u], inv)
            if residuals:
                for k in range(m):
                    wr[k] = r[lo + k]
                for p in range(d):
                    x = out[u, p]
                    for k in range(m):
                        wr[k] -= x * X[p, k]
                for k in range(m):
                    resid[lo + k] = wr[k]


@numba.njit(**_JIT)
def normal_wishart(rows, beta0, z, chi2, mean_out, prec_out):
    """A draw of (μ, Λ) from the Normal-Wishart posterior given ``rows`` (n × d).

    ``Λ ~ Wishart(d + n, S⁻¹)``, ``S = I + Σ (x - x̄)(x - x̄)ᵀ + β₀n/(β₀+n) x̄x̄ᵀ``, by Bartlett:
    ``Λ = F A Aᵀ Fᵀ`` with ``F = C⁻ᵀ`` (``S = C Cᵀ``), A lower triangular with
    ``A_jj = √chi2[j]`` (``chi2[j] ~ χ²(d + n - j)``) and ``A_pq = z[p, q]`` below
    the diagonal; then ``μ ~ N(n x̄/(β₀+n), ((β₀+n)Λ)⁻¹)`` with ``z[d]`` as its N(0, I) draw.
    """
    n, d = rows.shape
    mean = np.zeros(d)
    for u in range(n):
        for p in range(d):
            mean[p] += rows[u, p]
    mean /= n
    S = np.zeros((d, d))
    for u in range(n):
        for p in range(d):
            xp = rows[u, p] - mean[p]
            for q in range(p + 1):
                S[p, q] += xp * (rows[u, q] - mean[q])
    shrink = beta0 * n / (beta0 + n)
    for p in range(d):
        S[p, p] += 1.0
        for q in range(p + 1):
            S[p, q] += shrink * mean[p] * mean[q]
    inv = np.empty(d)
    cholesky(S, inv)  # lower triangle: C
    A = np.zeros((d, d))
    for p in range(d):
        A[p, p] = np.sqrt(chi2[p])
        for q in range(p):
            A[p, q] = z[p, q]
    # F A = C⁻ᵀ A: solve Cᵀ X = A column by column (Cᵀ is upper triangular)
    for j in range(d):
        for p in range(d - 1, -1, -1):
            t = A[p, j]
            for q in range(p + 1, d):
                t -= S[q, p] * A[q, j]
            A[p, j] = t * inv[p]
    for p in range(d):
        for q in range(p + 1):
            t = 0.0
            for j in range(d):
                t += A[p, j] * A[q, j]
            prec_out[p, q] = t
            prec_out[q, p] = t
    # μ: precision (β₀+n)Λ, mean n x̄/(β₀+n), i.e. y = (β₀+n)Λ · n x̄/(β₀+n) = n Λ x̄
    P = (beta0 + n) * prec_out
    y = np.zeros(d)
    for p in range(d):
        for q in range(d):
            y[p] += n * prec_out[p, q] * mean[q]
    gaussian(P, y, z[d], mean_out, inv)


@numba.njit(**_JIT)
def matvec(A, x):
    y = np.zeros(A.shape[0])
    for p in range(A.shape[0]):
        for q in range(A.shape[1]):
            y[p] += A[p, q] * x[q]
    return y


@numba.njit(parallel=True, **_JIT)
def sweep(
    ucrow, ucol, ur, icrow, icol, ir, U, V, U_new, V_new, g, h, alpha, resid, unit_gamma, normals,
    noise_prior, beta0, sum_u, sum_i, chunks,
):
    """One Gibbs sweep (see :func:`fit_bayes`); returns the new α. ``resid``: the residuals
    of (U, V), in item order, on entry; of (U_new, V_new) on return.

    ``unit_gamma`` holds Gamma(shape, 1) draws, shapes ``c + n_u/2`` (users), ``c + n_i/2``
    (items), ``1 + N/2`` (α) and ``(d + n - j)/2`` for the two Wishart draws (users, items);
    ``normals`` the N(0, 1) draws: users × d, items × d, then (d + 1) × d for each Wishart.
    """
    n_users, d = U.shape
    n_items = V.shape[0]
    c = noise_prior
    # g_u | h, α, residuals: Gamma(c + n_u/2, c + α Σ_i h_i e²/2)
    sum_u[:] = 0.0
    for i in range(n_items):
        hi = h[i]
        for k in range(icrow[i], icrow[i + 1]):
            sum_u[icol[k]] += hi * resid[k] * resid[k]
    for u in range(n_users):
        g[u] = unit_gamma[u] / (c + alpha * sum_u[u] / 2)
    # h_i | g, α: Gamma(c + n_i/2, c + α Σ_u g_u e²/2)
    total = 0.0
    for i in prange(n_items):
        s = 0.0
        for k in range(icrow[i], icrow[i + 1]):
            s += g[icol[k]] * resid[k] * resid[k]
        sum_i[i] = s
    for i in range(n_items):
        h[i] = unit_gamma[n_users + i] / (c + alpha * sum_i[i] / 2)
        total += h[i] * sum_i[i]
    # α | g, h: Gamma(1 + N/2, 1 + Σ g_u h_i e²/2)
    at = n_users + n_items
    alpha = unit_gamma[at] / (1.0 + total / 2)
    chi_u = 2.0 * unit_gamma[at + 1: at + 1 + d]
    chi_i = 2.0 * unit_gamma[at + 1 + d: at + 1 + 2 * d]
    zu = normals[: n_users * d].reshape((n_users, d))
    zi = normals[n_users * d: (n_users + n_items) * d].reshape((n_items, d))
    base = (n_users + n_items) * d
    wu = normals[base: base + (d + 1) * d].reshape((d + 1, d))
    wi = normals[base + (d + 1) * d: base + 2 * (d + 1) * d].reshape((d + 1, d))
    mean = np.empty(d)
    prec = np.empty((d, d))
    normal_wishart(U, beta0, wu, chi_u, mean, prec)
    draw_rows(ucrow, ucol, ur, alpha * g, h, V, prec, matvec(prec, mean), zu, U_new, resid[:0], chunks)
    normal_wishart(V, beta0, wi, chi_i, mean, prec)
    draw_rows(icrow, icol, ir, alpha * h, g, U_new, prec, matvec(prec, mean), zi, V_new, resid, chunks)
    return alpha


@numba.njit(parallel=True, **_JIT)
def residuals(crow, col, r, rows, others, out):
    """``out[k] = r_k - rows[u] · others[col[k]]`` for the ratings k of each row u."""
    d = rows.shape[1]
    for u in prange(rows.shape[0]):
        for k in range(crow[u], crow[u + 1]):
            e = r[k]
            for p in range(d):
                e -= rows[u, p] * others[col[k], p]
            out[k] = e


@numba.njit(parallel=True, **_JIT)
def add_predictions(users, items, U, V, out):
    """``out[k] += U[users[k]] · V[items[k]]``."""
    d = U.shape[1]
    for k in prange(users.shape[0]):
        u, i = users[k], items[k]
        s = 0.0
        for p in range(d):
            s += U[u, p] * V[i, p]
        out[k] += s
