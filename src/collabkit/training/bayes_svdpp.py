"""Bayesian SVD++ by Gibbs sampling: implicit factors from which items each user rated, and its "flipped" twin.

The model (Bayesian PMF of :mod:`collabkit.training.bayes`, with biases and
the implicit terms of SVD++ on both sides, as in Rendle et al. 2019, "On the
difficulty of evaluating baselines")::

    r_ui ~ N(μ + b_u + b_i + P_u · Q_i,  1 / (α g_u h_i))
    P_u  = p_u + |N(u)|^-½ Σ_{j ∈ N(u)} y_j      N(u): the items u rated in training
    Q_i  = q_i + |M(i)|^-½ Σ_{v ∈ M(i)} z_v      M(i): the users who rated i in training
    p_u ~ N(μ_p, Λ_p⁻¹), q_i ~ N(μ_q, Λ_q⁻¹)     (μ, Λ) ~ Normal-Wishart(0, β₀, D, I)
    y_j ~ N(0, λ_y⁻¹ I), z_v ~ N(0, λ_z⁻¹ I)     λ ~ Gamma(1, 1)
    b_u ~ N(0, λ_bu⁻¹), b_i ~ N(0, λ_bi⁻¹)       λ_b ~ Gamma(1, 1)
    α ~ Gamma(1, 1), g_u, h_i ~ Gamma(c, c)

The implicit sets come from the training pairs only (inductive), unless the
caller passes other pairs (``implicit_pairs``, for a labelled research figure).

**The sampler works on the effective vectors.** With ``X`` the (users × items)
matrix ``X_uj = |N(u)|^-½`` for ``j ∈ N(u)``, ``P = p + X Y`` is a change of
variables with unit Jacobian, so the model reads ``P_u ~ N(μ_p + (XY)_u, Λ_p⁻¹)``.
Given Y, P's conditional is the one Bayesian PMF draws (:func:`~collabkit.training.bayes.draw_rows`
with a prior mean per row). Given P, the whole of Y is a Bayesian linear regression
``P - μ_p = X Y + E`` (rows of E ~ N(0, Λ_p⁻¹)), which one joint draw solves
exactly: rotating the factor axes by the eigenvectors of ``Λ_p = R diag(s) Rᵀ``
makes the columns independent, and the thin SVD of ``X = U diag(σ) Wᵀ``,
computed once, diagonalises each column's precision ``s_k XᵀX + λ_y I``. A
draw of Y then costs two products with W, no factorisation. The items' side
is the same with ``Xᵀ``'s pattern. So every block (biases, P, Y, Q, Z, the
noise and the hyper-parameters) is drawn from its exact conditional.

The thin SVD is of a dense (users × items) matrix: fine for MovieLens 100K
and ml-latest-small (under a second), not for millions of users.

The prediction is the posterior mean, Rao-Blackwellised over Q as in
:func:`~collabkit.training.bayes.fit_bayes`, and the implicit terms are already
inside P and Q, so it is stored as an ordinary ``DotProductBias``: kept
samples side by side scaled by ``1/√S``, and the averaged biases (``μ`` in
the user biases).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from collabkit.errors import ConfigError, TrainingDivergedError
from collabkit.models import DotProductBias
from collabkit.training.bayes import (
    BayesConfig,
    Chain,
    GibbsSolver,
    Ratings,
    draw_rows,
    normal_wishart,
    store_posterior_mean,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SVDppConfig(BayesConfig):
    """Settings of the Bayesian SVD++ sampler (see the module's docstring for the model): the Gibbs
    sampler's own (:class:`~collabkit.training.bayes.BayesConfig`: priors, reporting, the checks) with the
    chain the ``accurate`` preset runs, and the model's parts.

    The defaults were chosen on a validation split of ML-100K's u1.base
    (docs/benchmarks.md, "What was tried"): u1 RMSE 0.885 in about half a minute.
    """

    n_factors: int = 10
    sweeps: int = 500
    burn_in: int = 50
    thin: int = 10  # keep every thin-th sample after burn-in (the model stores kept × n_factors columns)
    # the model's parts, not options of a training run (metadata: option False)
    user_implicit: bool = field(default=True, metadata={"option": False})  # P_u holds |N(u)|^-½ Σ y_j
    item_implicit: bool = field(default=True, metadata={"option": False})  # Q_i holds |M(i)|^-½ Σ z_v ("flipped")
    biases: bool = field(default=True, metadata={"option": False})


DENSE_CELLS = 100_000_000
"""The most users × items cells :class:`Implicit` builds densely (0.8 GB of float64, and several copies on the
way to its SVD): ml-1m's 22M cells fit, ml-10m's 746M do not."""


def check_size(n_users: int, n_items: int) -> None:
    """Refuse, in one line, data too large for the dense SVD of the implicit sets (before any is built)."""
    if n_users * n_items > DENSE_CELLS:
        raise ConfigError(
            f"the bayes-svdpp solver (--preset accurate) builds a dense users × items matrix, and {n_users:,} users "
            f"× {n_items:,} items is more than its limit of {DENSE_CELLS:,} cells; train data this size with the "
            "default preset (solver bayes)"
        )


class Implicit:
    """``X_uj = |N(u)|^-½`` for the pairs (u, j) given (duplicates count once) and its thin SVD: the
    implicit term of every row is ``X @ Y``, and :meth:`draw` draws Y given the rows' effective vectors."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> None:
        keys = np.unique(rows.astype(np.int64) * n_cols + cols)
        rows, cols = keys // n_cols, keys % n_cols
        counts = np.bincount(rows, minlength=n_rows).astype(np.float64)
        scale = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        dense = np.zeros((n_rows, n_cols))
        dense[rows, cols] = scale[rows]
        X = torch.from_numpy(dense)
        # the thin SVD from the eigenvectors of the smaller Gram matrix (XXᵀ or XᵀX): several times faster
        wide = n_rows <= n_cols
        with warnings.catch_warnings():  # torch's sparse CSR "beta" warning, as in Ratings
            warnings.simplefilter("ignore", UserWarning)
            self.X = X.to_sparse_csr()
            gram = self.X @ X.T if wide else torch.from_numpy(np.ascontiguousarray(dense.T)).to_sparse_csr() @ X
        squares, vectors = torch.linalg.eigh(gram)
        keep = squares > 1e-10 * max(float(squares.max()), 1.0) if len(squares) else squares > 0
        s, vectors = squares[keep].sqrt(), vectors[:, keep]
        other = (X.T @ vectors if wide else X @ vectors) / s  # the other side's singular vectors
        U, W = (vectors, other) if wide else (other, vectors)
        # contiguous transposes too: torch's product with a transposed view is several times slower
        self.Ut, self.W, self.Wt, self.s = U.T.contiguous(), W.contiguous(), W.T.contiguous(), s

    def term(self, Y: torch.Tensor) -> torch.Tensor:
        """Every row's ``Σ_j X_uj y_j``."""
        return self.X @ Y

    def draw(self, target: torch.Tensor, prec: torch.Tensor, lam: float, z1: torch.Tensor, z2: torch.Tensor):
        """A draw of Y (cols × d) from ``target = X Y + E`` (rows of E ~ N(0, prec⁻¹)), ``y_j ~ N(0, I/lam)``.

        ``z1`` (rank × d) and ``z2`` (cols × d) are N(0, 1) draws. With ``prec = R diag(S) Rᵀ`` and
        ``Ỹ = Y R``, column k of Ỹ has precision ``S_k XᵀX + lam I``: along W's column m,
        ``S_k σ_m² + lam`` with mean ``S_k σ_m (Uᵀ target R)_mk`` over it; outside W's span, just lam.
        """
        S, R = torch.linalg.eigh(prec)
        S = S.clamp_min(0.0)
        proj = self.Ut @ (target @ R)  # rank × d
        precision = S[None, :] * self.s[:, None] ** 2 + lam
        coef = S[None, :] * self.s[:, None] * proj / precision + z1 / precision.sqrt()
        free = z2 / math.sqrt(lam)  # N(0, I/lam), its part along W replaced by coef
        rotated = free + self.W @ (coef - self.Wt @ free)
        return rotated @ R.T


def _bias_draw(residual: np.ndarray, rows: np.ndarray, n_rows: int, weights: np.ndarray, lam: float,
               normals: np.ndarray) -> np.ndarray:
    """Each row's bias given the rest: precision ``lam + Σ w``, mean ``Σ w e / (lam + Σ w)``."""
    precision = lam + np.bincount(rows, weights, minlength=n_rows)
    return np.bincount(rows, weights * residual, minlength=n_rows) / precision + normals / np.sqrt(precision)


def fit_bayes_svdpp(learn, config: SVDppConfig = SVDppConfig(), seed: int = 0,
                    implicit_pairs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Fill ``learn.model`` (a ``DotProductBias`` with ``config.model_factors`` factors and no ``y_range``)
    with the posterior mean of Bayesian SVD++ fitted to ``learn.dls.train``.

    ``implicit_pairs`` (user rows, item rows) replaces the training pairs as the implicit sets N(u) and M(i);
    leave it ``None`` for an inductive model. Every ``config.report_every`` sweeps (after burn-in) the
    recorder gets a row ``[train_mse, valid_mse, *metrics]`` of the posterior mean so far.
    """
    model = config.checked_model(learn.model, "fit_bayes_svdpp")
    check_size(model.u_weight.num_embeddings, model.i_weight.num_embeddings)
    rng = np.random.default_rng(seed)
    train, valid = learn.dls.train, learn.dls.valid
    users, items = train.x[:, 0].cpu().numpy().astype(np.int64), train.x[:, 1].cpu().numpy().astype(np.int64)
    ratings = train.y.cpu().double()
    n_users, n_items, n = model.u_weight.num_embeddings, model.i_weight.num_embeddings, len(ratings)
    mu = float(ratings.mean())
    centred = ratings - mu
    zeros = np.zeros(len(users))  # (the targets are set every sweep)
    by_user, by_item = Ratings(users, items, zeros, n_users, n_items), Ratings(items, users, zeros, n_items, n_users)
    imp_users, imp_items = (users, items) if implicit_pairs is None else implicit_pairs
    started = time.perf_counter()
    user_side = Implicit(imp_users, imp_items, n_users, n_items) if config.user_implicit else None
    item_side = Implicit(imp_items, imp_users, n_items, n_users) if config.item_implicit else None
    log.debug("implicit sets' SVD: %.2f s", time.perf_counter() - started)
    d, c = config.n_factors, config.noise_prior
    t = torch.from_numpy

    def normals(*shape) -> torch.Tensor:
        return t(rng.standard_normal(shape))

    P, Q = config.init_std * normals(n_users, d), config.init_std * normals(n_items, d)
    Y, Z = torch.zeros(n_items, d, dtype=torch.float64), torch.zeros(n_users, d, dtype=torch.float64)
    y_term = torch.zeros(n_users, d, dtype=torch.float64)
    z_term = torch.zeros(n_items, d, dtype=torch.float64)
    lam_y = lam_z = lam_bu = lam_bi = 1.0
    b_u, b_i = np.zeros(n_users), np.zeros(n_items)
    bias_sum = torch.zeros(n, dtype=torch.float64)  # b_u + b_i of every training pair
    g, h, alpha = torch.ones(n_users, dtype=torch.float64), torch.ones(n_items, dtype=torch.float64), 2.0
    users_t, items_t = t(users), t(items)
    v_users, v_items = valid.x[:, 0].cpu().long(), valid.x[:, 1].cpu().long()
    kept_p, kept_q, kept_bu, kept_bi = [], [], [], []
    train_sum = torch.zeros(n, dtype=torch.float64)
    valid_sum = torch.zeros(len(v_users), dtype=torch.float64)

    def prior(rows: torch.Tensor, implicit_term: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Λ, μ)`` drawn given the rows' own parts ``rows - implicit_term``, and each row's ``Λ (μ + term)``."""
        own = (rows - implicit_term).numpy()
        mean, prec = normal_wishart(own, config.beta0, rng.standard_normal((d + 1, d)),
                                    rng.chisquare(d + len(own) - np.arange(d)))
        prec_t = t(prec)
        return prec_t, t(mean), (t(mean)[None, :] + implicit_term) @ prec_t

    with Chain(learn, config) as chain:
        for sweep in range(config.sweeps):
            chain.begin()
            # the biases given the factors; then the targets of the factors' draws
            if config.biases:
                weights = (alpha * g[users_t] * h[items_t]).numpy()
                residual = (centred - (P[users_t] * Q[items_t]).sum(1)).numpy()
                b_u = _bias_draw(residual - b_i[items], users, n_users, weights, lam_bu, rng.standard_normal(n_users))
                b_i = _bias_draw(residual - b_u[users], items, n_items, weights, lam_bi, rng.standard_normal(n_items))
                lam_bu = rng.gamma(1.0 + n_users / 2) / (1.0 + float(b_u @ b_u) / 2)
                lam_bi = rng.gamma(1.0 + n_items / 2) / (1.0 + float(b_i @ b_i) / 2)
                bias_sum = t(b_u[users] + b_i[items])
                by_user.set_targets(centred - bias_sum)
                by_item.set_targets(centred - bias_sum)
            elif sweep == 0:  # biases fixed at zero: the targets never change
                by_user.set_targets(centred)
                by_item.set_targets(centred)

            # users: P given Q (prior mean μ_p + X Y), then g, then Y given P
            prec, mean, prec_mean = prior(P, y_term)
            P, _, errors = draw_rows(by_user, Q, alpha * g, h, prec, prec_mean, normals(n_users, d))
            g = t(rng.standard_gamma(c + by_user.counts / 2)) / (c + alpha * errors / 2)
            if user_side is not None:
                Y = user_side.draw(P - mean, prec, lam_y, normals(len(user_side.s), d), normals(n_items, d))
                lam_y = rng.gamma(1.0 + n_items * d / 2) / (1.0 + float((Y * Y).sum()) / 2)
                y_term = user_side.term(Y)

            # items: Q given P, then h and α, then Z given Q
            prec, mean, prec_mean = prior(Q, z_term)
            Q, Q_mean, errors = draw_rows(by_item, P, alpha * h, g, prec, prec_mean, normals(n_items, d))
            h = t(rng.standard_gamma(c + by_item.counts / 2)) / (c + alpha * errors / 2)
            alpha = float(rng.standard_gamma(1.0 + n / 2)) / (1.0 + float(h @ errors) / 2)
            if item_side is not None:
                Z = item_side.draw(Q - mean, prec, lam_z, normals(len(item_side.s), d), normals(n_users, d))
                lam_z = rng.gamma(1.0 + n_users * d / 2) / (1.0 + float((Z * Z).sum()) / 2)
                z_term = item_side.term(Z)

            if not (math.isfinite(alpha) and torch.isfinite(Q).all() and torch.isfinite(P).all()):
                raise TrainingDivergedError(f"the Gibbs sampler diverged at sweep {sweep + 1}")
            if chain.keeps(sweep):
                # (b, P, E[Q | P, b]) : the biases are the ones P and Q were drawn given
                kept_p.append(P)
                kept_q.append(Q_mean)
                kept_bu.append(b_u)
                kept_bi.append(b_i)
                train_sum += bias_sum + (P[users_t] * Q_mean[items_t]).sum(1)
                valid_sum += t(b_u)[v_users] + t(b_i)[v_items] + (P[v_users] * Q_mean[v_items]).sum(1)
            if chain.due(sweep, len(kept_p)):
                s = len(kept_p)
                valid_mean = mu + valid_sum / s if len(v_users) else None
                chain.report(sweep, train_sum / s, centred, valid_mean)
    store_posterior_mean(model, kept_p, kept_q, t(mu + np.mean(kept_bu, 0)), t(np.mean(kept_bi, 0)))


class SVDppSolver(GibbsSolver):
    """The solver entry of Bayesian SVD++ (:data:`~collabkit.training.solvers.SOLVERS` ``"bayes-svdpp"``): the
    Gibbs solver's model and learner, its own settings and sampler."""

    name = "bayes-svdpp"
    settings_class = SVDppConfig
    multiprocess = False

    def build_model(self, settings: BayesConfig, n_users: int, n_items: int, ratings: np.ndarray) -> DotProductBias:
        check_size(n_users, n_items)
        return super().build_model(settings, n_users, n_items, ratings)

    def fit(self, learn, settings: BayesConfig, seed: int, lr: float | None = None, checkpoint=None) -> None:
        assert isinstance(settings, SVDppConfig)
        fit_bayes_svdpp(learn, settings, seed=seed)


SVDPP = SVDppSolver()
