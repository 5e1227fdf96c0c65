"""Compiled loops of the Gibbs sampler in :mod:`collabkit.training.bayes` (imported on first use).

numba compiles them once and caches the machine code beside this file
(``cache=True``); they see NumPy arrays only and run on one thread.

Symmetric d × d matrices are kept as their packed lower triangle, element
``(p, q)``, ``q <= p``, at ``p (p + 1) / 2 + q``. Many small systems are solved
side by side: a batch holds B of them as columns (``P[:, v]`` is system v), so
every step of a factorisation is one loop over the batch. That keeps the
processor busy where one 10 × 10 Cholesky factorisation at a time would wait on
each square root and division in turn.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "fastmath": True, "error_model": "numpy", "nogil": True}
_BATCH = 64  # systems factorised side by side


@numba.njit(inline="always", **_JIT)
def at(p, q):
    """Position of element (p, q), q <= p, in a packed lower triangle."""
    return p * (p + 1) // 2 + q


@numba.njit(inline="always", **_JIT)
def cholesky(P, inv, n):
    """``P = L Lᵀ`` for the first n systems: L replaces P (packed), ``inv[j] = 1 / L_jj``."""
    d = inv.shape[0]
    for j in range(d):
        jj = at(j, j)
        for q in range(j):
            jq = at(j, q)
            for v in range(n):
                P[jj, v] -= P[jq, v] * P[jq, v]
        for v in range(n):
            s = np.sqrt(P[jj, v])
            P[jj, v] = s
            inv[j, v] = 1.0 / s
        for p in range(j + 1, d):
            pj = at(p, j)
            for q in range(j):
                pq, jq = at(p, q), at(j, q)
                for v in range(n):
                    P[pj, v] -= P[pq, v] * P[jq, v]
            for v in range(n):
                P[pj, v] *= inv[j, v]


@numba.njit(inline="always", **_JIT)
def forward(L, inv, y, n):
    """``L y' = y`` in place, for the first n systems."""
    d = inv.shape[0]
    for p in range(d):
        for q in range(p):
            pq = at(p, q)
            for v in range(n):
                y[p, v] -= L[pq, v] * y[q, v]
        for v in range(n):
            y[p, v] *= inv[p, v]


@numba.njit(inline="always", **_JIT)
def backward(L, inv, w, x, n):
    """``Lᵀ x = w`` for the first n systems."""
    d = inv.shape[0]
    for p in range(d - 1, -1, -1):
        for v in range(n):
            x[p, v] = w[p, v]
        for q in range(p + 1, d):
            qp = at(q, p)
            for v in range(n):
                x[p, v] -= L[qp, v] * x[q, v]
        for v in range(n):
            x[p, v] *= inv[p, v]


@numba.njit(inline="always", **_JIT)
def gaussian(P, y, z, out, mean, inv, n):
    """Draws from ``N(P⁻¹ y, P⁻¹)`` into ``out`` given ``z ~ N(0, I)``, for the first n systems
    (all arrays d × batch, P packed). ``mean`` gets ``P⁻¹ y`` itself; P, y and ``inv`` are overwritten.

    With ``P = L Lᵀ``: ``L y' = y`` forward, then ``Lᵀ x = y' + z`` backward, so
    ``x = P⁻¹ y + L⁻ᵀ z`` and ``Cov(L⁻ᵀ z) = (L Lᵀ)⁻¹``.
    """
    cholesky(P, inv, n)
    forward(P, inv, y, n)
    backward(P, inv, y, mean, n)
    for p in range(inv.shape[0]):
        for v in range(n):
            y[p, v] += z[p, v]
    backward(P, inv, y, out, n)


@numba.njit(**_JIT)
def draw_rows(crow, col, r, a, b, others, prec, prec_mean, noise, out, means, errors):
    """Every row's draw from its Gaussian conditional; ``r`` holds the centred ratings.

    Row u's ratings k (column ``j = col[k]``, weight ``a[u] b[j]``, ``o_j = others[j]``):
    precision ``P = Λ + a[u] Σ_k b_j o_j o_jᵀ``, ``P m = Λμ + a[u] Σ_k r_k b_j o_j``;
    ``out[u] ~ N(m, P⁻¹)`` with ``noise[u]`` as its N(0, I) draw, and ``means[u]`` gets m
    (unless ``means`` is empty). ``errors[u]`` gets the row's weighted squared error
    ``Σ_k b_j (r_k - out[u] · o_j)²``, from the same sums:
    ``Σ b r² - 2 x · Σ b r o + xᵀ (Σ b o oᵀ) x``.

    Because the weights factorise, each column's ``(b_j o_j o_jᵀ, b_j o_j, b_j)`` is formed
    once, and a row's sums are one pass over its ratings, one contiguous run of
    d(d+1)/2 + d + 1 numbers per rating.
    """
    d = others.shape[1]
    t = d * (d + 1) // 2
    width = t + d + 1
    table = np.empty((others.shape[0], width))  # per column: packed b o oᵀ, then b o, then b
    for j in range(others.shape[0]):
        for p in range(d):
            x = b[j] * others[j, p]
            table[j, t + p] = x
            for q in range(p + 1):
                table[j, at(p, q)] = x * others[j, q]
        table[j, width - 1] = b[j]
    packed_prec = np.empty(t)
    for p in range(d):
        for q in range(p + 1):
            packed_prec[at(p, q)] = prec[p, q]
    sums, coef = np.empty(width), np.ones(width)  # coef: 1 for b o oᵀ, r_k for b o, r_k² for b
    P, y, z = np.empty((t, _BATCH)), np.empty((d, _BATCH)), np.empty((d, _BATCH))
    quad, rated, squares = np.empty((t, _BATCH)), np.empty((d, _BATCH)), np.empty(_BATCH)
    draw, mean, inv = np.empty((d, _BATCH)), np.empty((d, _BATCH)), np.empty((d, _BATCH))
    n_rows = out.shape[0]
    for first in range(0, n_rows, _BATCH):
        n = min(_BATCH, n_rows - first)
        for v in range(n):
            u = first + v
            sums[:] = 0.0
            for k in range(crow[u], crow[u + 1]):
                row = table[col[k]]
                coef[t:width - 1] = r[k]
                coef[width - 1] = r[k] * r[k]
                for s in range(width):
                    sums[s] += coef[s] * row[s]
            for s in range(t):
                quad[s, v] = sums[s]
                P[s, v] = packed_prec[s] + a[u] * sums[s]
            for p in range(d):
                rated[p, v] = sums[t + p]
                y[p, v] = prec_mean[p] + a[u] * sums[t + p]
                z[p, v] = noise[u, p]
            squares[v] = sums[width - 1]
        gaussian(P, y, z, draw, mean, inv, n)
        for v in range(n):
            u = first + v
            e = squares[v]
            for p in range(d):
                x = draw[p, v]
                out[u, p] = x
                e -= 2.0 * x * rated[p, v]
                e += x * x * quad[at(p, p), v]
                for q in range(p):
                    e += 2.0 * x * draw[q, v] * quad[at(p, q), v]
            errors[u] = max(e, 0.0)
            if means.shape[0] > 0:
                for p in range(d):
                    means[u, p] = mean[p, v]


@numba.njit(**_JIT)
def normal_wishart(rows, beta0, z, chi2, mean_out, prec_out):
    """A draw of (μ, Λ) from the Normal-Wishart posterior given ``rows`` (n × d).

    ``Λ ~ Wishart(d + n, S⁻¹)``, ``S = I + Σ (x - x̄)(x - x̄)ᵀ + β₀n/(β₀+n) x̄x̄ᵀ``, by Bartlett:
    ``Λ = F A Aᵀ Fᵀ`` with ``F = C⁻ᵀ`` (``S = C Cᵀ``), A lower triangular with
    ``A_jj = √chi2[j]`` (``chi2[j] ~ χ²(d + n - j)``) and ``A_pq = z[p, q]`` below
    the diagonal; then ``μ ~ N(n x̄/(β₀+n), ((β₀+n)Λ)⁻¹)`` with ``z[d]`` as its N(0, I) draw.
    """
    n, d = rows.shape
    t = d * (d + 1) // 2
    mean = np.zeros(d)
    for u in range(n):
        for p in range(d):
            mean[p] += rows[u, p]
    mean /= n
    S = np.zeros((t, 1))  # packed, one system
    for u in range(n):
        for p in range(d):
            xp = rows[u, p] - mean[p]
            for q in range(p + 1):
                S[at(p, q), 0] += xp * (rows[u, q] - mean[q])
    shrink = beta0 * n / (beta0 + n)
    for p in range(d):
        S[at(p, p), 0] += 1.0
        for q in range(p + 1):
            S[at(p, q), 0] += shrink * mean[p] * mean[q]
    inv = np.empty((d, 1))
    cholesky(S, inv, 1)  # C
    # F A = C⁻ᵀ A: solve Cᵀ X = A column by column
    column, root = np.zeros((d, 1)), np.empty((d, d))
    for j in range(d):
        for p in range(d):
            column[p, 0] = np.sqrt(chi2[j]) if p == j else (z[p, j] if p > j else 0.0)
        backward(S, inv, column, column, 1)
        for p in range(d):
            root[p, j] = column[p, 0]
    P = np.empty((t, 1))
    for p in range(d):
        for q in range(p + 1):
            s = 0.0
            for j in range(d):
                s += root[p, j] * root[q, j]
            prec_out[p, q] = s
            prec_out[q, p] = s
            P[at(p, q), 0] = (beta0 + n) * s
    # μ: precision (β₀+n)Λ, mean n x̄/(β₀+n), i.e. y = (β₀+n)Λ · n x̄/(β₀+n) = n Λ x̄
    y = np.zeros((d, 1))
    for p in range(d):
        for q in range(d):
            y[p, 0] += n * prec_out[p, q] * mean[q]
    out, unused = np.empty((d, 1)), np.empty((d, 1))
    gaussian(P, y, z[d:].T.copy(), out, unused, inv, 1)
    mean_out[:] = out[:, 0]


@numba.njit(**_JIT)
def matvec(A, x):
    y = np.zeros(A.shape[0])
    for p in range(A.shape[0]):
        for q in range(A.shape[1]):
            y[p] += A[p, q] * x[q]
    return y


@numba.njit(**_JIT)
def sweep(ucrow, ucol, ur, icrow, icol, ir, U, V, V_mean, g, h, alpha, unit_gamma, normals, noise_prior, beta0):
    """One Gibbs sweep (see :func:`fit_bayes`), in place; returns the new α.

    In turn: the users' hyper-parameters, U, g, the items' hyper-parameters, V, h and α,
    each drawn given the latest values of the rest. ``V_mean`` gets the items'
    conditional means given the new U (the Rao-Blackwellised factors the predictions use).

    ``unit_gamma`` holds Gamma(shape, 1) draws, shapes ``c + n_u/2`` (users), ``c + n_i/2``
    (items), ``1 + N/2`` (α) and ``(d + n - j)/2`` for the two Wishart draws (users, items);
    ``normals`` the N(0, 1) draws: users × d, items × d, then (d + 1) × d for each Wishart.
    """
    n_users, d = U.shape
    n_items = V.shape[0]
    c = noise_prior
    first = n_users + n_items
    chi_u = 2.0 * unit_gamma[first + 1: first + 1 + d]
    chi_i = 2.0 * unit_gamma[first + 1 + d: first + 1 + 2 * d]
    zu = normals[: n_users * d].reshape((n_users, d))
    zi = normals[n_users * d: (n_users + n_items) * d].reshape((n_items, d))
    base = (n_users + n_items) * d
    wu = normals[base: base + (d + 1) * d].reshape((d + 1, d))
    wi = normals[base + (d + 1) * d: base + 2 * (d + 1) * d].reshape((d + 1, d))
    mean = np.empty(d)
    prec = np.empty((d, d))
    errors_u, errors_i = np.empty(n_users), np.empty(n_items)
    normal_wishart(U, beta0, wu, chi_u, mean, prec)
    draw_rows(ucrow, ucol, ur, alpha * g, h, V, prec, matvec(prec, mean), zu, U, U[:0], errors_u)
    # g_u | U, V, h, α: Gamma(c + n_u/2, c + α Σ_i h_i e²/2)
    for u in range(n_users):
        g[u] = unit_gamma[u] / (c + alpha * errors_u[u] / 2)
    normal_wishart(V, beta0, wi, chi_i, mean, prec)
    draw_rows(icrow, icol, ir, alpha * h, g, U, prec, matvec(prec, mean), zi, V, V_mean, errors_i)
    # h_i | U, V, g, α: Gamma(c + n_i/2, c + α Σ_u g_u e²/2)
    total = 0.0
    for i in range(n_items):
        h[i] = unit_gamma[n_users + i] / (c + alpha * errors_i[i] / 2)
        total += h[i] * errors_i[i]
    # α | U, V, g, h: Gamma(1 + N/2, 1 + Σ g_u h_i e²/2)
    return unit_gamma[first] / (1.0 + total / 2)


@numba.njit(**_JIT)
def add_predictions(users, items, U, V, out):
    """``out[k] += U[users[k]] · V[items[k]]``."""
    d = U.shape[1]
    for k in range(users.shape[0]):
        u, i = users[k], items[k]
        s = 0.0
        for p in range(d):
            s += U[u, p] * V[i, p]
        out[k] += s
