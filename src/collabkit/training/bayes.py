"""Bayesian matrix factorisation by Gibbs sampling: collabkit's most accurate rating model.

The model (Bayesian PMF, Salakhutdinov & Mnih 2008, with a noise precision
per user and per item)::

    r_ui  ~ N(μ + U_u · V_i,  1 / (α g_u h_i))       μ: the mean training rating
    U_u   ~ N(μ_U, Λ_U⁻¹)      V_i ~ N(μ_V, Λ_V⁻¹)
    (μ_U, Λ_U), (μ_V, Λ_V) ~ Normal-Wishart(0, β₀, ν₀ = D, W₀ = I)
    α ~ Gamma(1, 1)            g_u, h_i ~ Gamma(c, c)   (mean 1: some users and items are noisier)

Every sweep draws, in turn, the noise precisions, the user hyper-parameters,
all users at once, the item hyper-parameters and all items at once. A user's
conditional is Gaussian with precision ``Λ_U + Σ_j w_uj V_j V_jᵀ``. A sweep is
one call of compiled loops (:mod:`collabkit.training.bayes_kernels`, numba):
per user, the sums over its ratings, a 10 × 10 Cholesky factorisation and the
draw, users split across threads. The random numbers come from one NumPy
generator seeded by ``seed``, drawn in the same order whatever the thread count,
so a fit is reproducible and does not depend on the number of threads.

The prediction is the posterior mean of ``μ + U_u · V_i``, averaged over the
samples kept after burn-in. It is stored as an ordinary ``DotProductBias``
(``y_range=None``): the kept samples side by side, scaled by ``1/√S``, so that
one dot product is the average of the S sampled ones::

    [U¹ … Uˢ]/√S · [V¹ … Vˢ]/√S = (1/S) Σ_s Uˢ · Vˢ

The saved model therefore predicts, recommends, folds in new users and loads
exactly like any other.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from collabkit.models import DotProductBias


@dataclass(frozen=True)
class BayesConfig:
    """Settings of the Gibbs sampler.

    The defaults (10 factors, 150 sweeps, 20 burn-in, every 2nd kept: 65
    samples) reach RMSE 0.905 on ML-100K u1; 200 sweeps with 50 burn-in reach
    0.904 in a third more time (docs/benchmarks.md).
    """

    n_factors: int = 10
    sweeps: int = 40
    burn_in: int = 10
    thin: int = 1  # keep every thin-th sample after burn-in (the model stores kept × n_factors columns)
    noise_prior: float = 2.0  # c in g_u, h_i ~ Gamma(c, c)
    beta0: float = 2.0
    init_std: float = 0.5
    report_every: int = 25

    def __post_init__(self) -> None:
        if not 0 <= self.burn_in < self.sweeps:
            raise ValueError(f"burn_in must be in [0, sweeps={self.sweeps}), got {self.burn_in}")
        if self.n_factors < 1 or self.thin < 1 or self.report_every < 1:
            raise ValueError("n_factors, thin and report_every must be positive integers")
        if self.noise_prior <= 0 or self.beta0 <= 0 or self.init_std <= 0:
            raise ValueError("noise_prior, beta0 and init_std must be positive")

    @property
    def kept(self) -> int:
        """How many samples the model averages."""
        return len(range(self.burn_in, self.sweeps, self.thin))

    @property
    def model_factors(self) -> int:
        """Columns of the stored factor tables: ``kept * n_factors``."""
        return self.kept * self.n_factors


def _kernels():
    """The compiled loops (numba is imported, and its cached machine code loaded, on first use only)."""
    from collabkit.training import bayes_kernels

    return bayes_kernels


class _Csr:
    """The ratings in one orientation: each row's ratings contiguous (row pointer, column, value)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int) -> None:
        self.order = np.lexsort((cols, rows))  # position k here is rating order[k] of the input
        counts = np.bincount(rows, minlength=n_rows)
        self.crow = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.col = np.ascontiguousarray(cols[self.order], dtype=np.int64)
        self.values = np.ascontiguousarray(values[self.order], dtype=np.float64)
        self.counts = counts.astype(np.float64)


def fit_bayes(learn, config: BayesConfig = BayesConfig(), seed: int = 0) -> None:
    """Fill ``learn.model`` (a ``DotProductBias`` with ``config.model_factors`` factors and no
    ``y_range``) with the posterior mean of Bayesian PMF fitted to ``learn.dls.train``.

    Every ``config.report_every`` sweeps (after burn-in) the recorder gets a row
    ``[train_mse, valid_mse, *metrics]`` of the posterior mean so far, and the
    learner's callbacks see it as an epoch.
    """
    model = learn.model
    if not isinstance(model, DotProductBias) or model.y_range is not None:
        raise TypeError("fit_bayes needs a DotProductBias model with y_range=None")
    if model.u_weight.embedding_dim != config.model_factors:
        raise ValueError(
            f"the model has {model.u_weight.embedding_dim} factors; this sampler stores "
            f"{config.kept} samples x {config.n_factors} = {config.model_factors}"
        )
    kernels = _kernels()
    rng = np.random.default_rng(seed)
    train, valid = learn.dls.train, learn.dls.valid
    users, items = train.x[:, 0].cpu().numpy(), train.x[:, 1].cpu().numpy()
    ratings = train.y.cpu().double()
    n_users, n_items, n = model.u_weight.num_embeddings, model.i_weight.num_embeddings, len(ratings)
    mu = float(ratings.mean())
    centred = ratings.numpy() - mu
    by_user = _Csr(users, items, centred, n_users)
    by_item = _Csr(items, users, centred, n_items)
    d, c = config.n_factors, config.noise_prior
    U = config.init_std * rng.standard_normal((n_users, d))
    V = config.init_std * rng.standard_normal((n_items, d))
    g, h, alpha = np.ones(n_users), np.ones(n_items), 2.0
    shapes = np.concatenate([
        c + by_user.counts / 2, c + by_item.counts / 2, [1.0 + n / 2],
        (d + n_users - np.arange(d)) / 2, (d + n_items - np.arange(d)) / 2,
    ])
    n_normals = (n_users + n_items + 2 * (d + 1)) * d
    kept_u, kept_v = [], []
    train_sum = np.zeros(n)
    v_users, v_items = valid.x[:, 0].cpu().numpy(), valid.x[:, 1].cpu().numpy()
    valid_sum = np.zeros(len(v_users))
    reports = math.ceil((config.sweeps - config.burn_in) / config.report_every)
    started = time.perf_counter()
    with learn.fitting(reports) as callbacks:
        for sweep in range(config.sweeps):
            V_mean = np.empty_like(V)
            alpha = kernels.sweep(
                by_user.crow, by_user.col, by_user.values, by_item.crow, by_item.col, by_item.values,
                U, V, V_mean, g, h, alpha, rng.standard_gamma(shapes), rng.standard_normal(n_normals), c, config.beta0,
            )
            if not (math.isfinite(alpha) and np.isfinite(V).all()):
                raise TrainingDivergedError(f"the Gibbs sampler diverged at sweep {sweep + 1}")
            if sweep >= config.burn_in and (sweep - config.burn_in) % config.thin == 0:
                kept_u.append(U.copy())
                kept_v.append(V_mean)
                kernels.add_predictions(users, items, U, V_mean, train_sum)
                kernels.add_predictions(v_users, v_items, U, V_mean, valid_sum)
            done = sweep + 1 - config.burn_in
            if kept_u and (done % config.report_every == 0 or sweep + 1 == config.sweeps):
                s = len(kept_u)
                train_pred = torch.from_numpy(mu + train_sum / s)
                row = [float(((train_pred - ratings) ** 2).mean())]
                if len(v_users):
                    valid_pred = torch.from_numpy(mu + valid_sum / s).float()
                    targets = valid.y.cpu()
                    row += [float(((valid_pred - targets) ** 2).mean()),
                            *(float(m(valid_pred, targets)) for m in learn.metrics)]
                else:
                    row += [float("nan")] * (1 + len(learn.metrics))
                report = len(learn.recorder.values)
                learn.record_epoch(report, row, sweep + 1, time.perf_counter() - started)
                started = time.perf_counter()
                for cb in callbacks:
                    cb.after_epoch(learn, report)
    scale = 1.0 / math.sqrt(len(kept_u))
    device = model.u_weight.weight.device
    with torch.no_grad():
        model.u_weight.weight.copy_(torch.from_numpy(np.concatenate(kept_u, 1) * scale).to(device))
        model.i_weight.weight.copy_(torch.from_numpy(np.concatenate(kept_v, 1) * scale).to(device))
        model.u_bias.weight.fill_(mu)
        model.i_bias.weight.zero_()
