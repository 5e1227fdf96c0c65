"""Bayesian matrix factorisation by Gibbs sampling: collabkit's most accurate rating model.

The model (Bayesian PMF, Salakhutdinov & Mnih 2008, with a noise precision
per user and per item)::

    r_ui  ~ N(μ + U_u · V_i,  1 / (α g_u h_i))       μ: the mean training rating
    U_u   ~ N(μ_U, Λ_U⁻¹)      V_i ~ N(μ_V, Λ_V⁻¹)
    (μ_U, Λ_U), (μ_V, Λ_V) ~ Normal-Wishart(0, β₀, ν₀ = D, W₀ = I)
    α ~ Gamma(1, 1)            g_u, h_i ~ Gamma(c, c)   (mean 1: some users and items are noisier)

Every sweep draws, in turn, the noise precisions, the user hyper-parameters,
all users at once, the item hyper-parameters and all items at once. A user's
conditional is Gaussian with precision ``Λ_U + Σ_j w_uj V_j V_jᵀ``; the sums
over each user's ratings are one sparse-matrix product, and the draws are one
batched Cholesky factorisation.

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
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Gamma, MultivariateNormal, Wishart

from collabkit.models import DotProductBias



@dataclass(frozen=True)
class BayesConfig:
    """Settings of the Gibbs sampler (the defaults reach RMSE 0.904 on ML-100K u1)."""

    n_factors: int = 10
    sweeps: int = 200
    burn_in: int = 50
    thin: int = 2  # keep every thin-th sample after burn-in (the model stores kept × n_factors columns)
    noise_prior: float = 2.0  # c in g_u, h_i ~ Gamma(c, c)
    beta0: float = 2.0
    init_std: float = 0.1
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


def _hyperparameters(rows: torch.Tensor, beta0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A draw of (μ, Λ) from the Normal-Wishart posterior given the current rows."""
    n, d = rows.shape
    mean = rows.mean(0)
    centred = rows - mean
    shrink = beta0 * n / (beta0 + n)
    scale_inverse = torch.eye(d, dtype=rows.dtype) + centred.T @ centred + shrink * torch.outer(mean, mean)
    scale_inverse = (scale_inverse + scale_inverse.T) / 2
    with warnings.catch_warnings():  # torch redraws a (rare) singular Bartlett sample and says so
        warnings.filterwarnings("ignore", message="Singular sample detected")
        precision = Wishart(df=torch.tensor(float(d + n), dtype=rows.dtype), precision_matrix=scale_inverse).sample()
    precision = (precision + precision.T) / 2
    centre = MultivariateNormal(n * mean / (beta0 + n), precision_matrix=(beta0 + n) * precision).sample()
    return centre, precision


def _draw_rows(
    weights: torch.Tensor, weighted_ratings: torch.Tensor, others: torch.Tensor, mean: torch.Tensor, prec: torch.Tensor
) -> torch.Tensor:
    """All rows at once: precision ``Λ + Σ_j w_j o_j o_jᵀ``, mean ``P⁻¹ (Λ μ + Σ_j w_j r_j o_j)``.

    ``weights`` and ``weighted_ratings`` are sparse (rows × others) CSR matrices.
    """
    n, d = weights.shape[0], others.shape[1]
    outer = (others[:, :, None] * others[:, None, :]).reshape(-1, d * d)
    precision = (weights @ outer).reshape(n, d, d) + prec
    chol = torch.linalg.cholesky(precision)
    centre = torch.cholesky_solve((weighted_ratings @ others + prec @ mean)[:, :, None], chol)
    noise = torch.randn(n, d, 1, dtype=others.dtype)
    return (centre + torch.linalg.solve_triangular(chol.transpose(1, 2), noise, upper=True))[:, :, 0]


class _Csr:
    """The ratings as a sparse matrix in one orientation, refilled with new values each sweep."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> None:
        self.order = torch.from_numpy(np.lexsort((cols.numpy(), rows.numpy())))
        counts = torch.bincount(rows, minlength=n_rows)
        self.crow = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self.col = cols[self.order]
        self.shape = (n_rows, n_cols)

    def of(self, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # torch calls its (well-tested) CSR support "beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.crow, self.col, values[self.order], size=self.shape, check_invariants=False
            )


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
    torch.manual_seed(seed)
    dtype = torch.float32
    train, valid = learn.dls.train, learn.dls.valid
    users, items = train.x[:, 0].cpu(), train.x[:, 1].cpu()
    ratings = train.y.cpu().double()
    n_users, n_items, n = model.u_weight.num_embeddings, model.i_weight.num_embeddings, len(ratings)
    mu = float(ratings.mean())
    centred = (ratings - mu).to(dtype)
    by_user = _Csr(users, items, n_users, n_items)
    by_item = _Csr(items, users, n_items, n_users)
    count_u = torch.bincount(users, minlength=n_users).to(dtype)
    count_i = torch.bincount(items, minlength=n_items).to(dtype)
    d, c = config.n_factors, config.noise_prior
    U = config.init_std * torch.randn(n_users, d, dtype=dtype)
    V = config.init_std * torch.randn(n_items, d, dtype=dtype)
    g, h, alpha = torch.ones(n_users, dtype=dtype), torch.ones(n_items, dtype=dtype), 2.0
    kept_u, kept_v = [], []
    train_sum = torch.zeros(n, dtype=torch.float64)
    v_users, v_items = valid.x[:, 0].cpu(), valid.x[:, 1].cpu()
    valid_sum = torch.zeros(len(v_users), dtype=torch.float64)
    callbacks = learn.fit_callbacks()
    for cb in callbacks:
        cb.before_fit(learn, math.ceil((config.sweeps - config.burn_in) / config.report_every))
    started = time.perf_counter()
    for sweep in range(config.sweeps):
        err2 = (centred - (U[users] * V[items]).sum(1)) ** 2
        g = Gamma(c + count_u / 2, c + alpha * torch.zeros(n_users, dtype=dtype).index_add_(0, users, h[items] * err2) / 2).sample()
        h = Gamma(c + count_i / 2, c + alpha * torch.zeros(n_items, dtype=dtype).index_add_(0, items, g[users] * err2) / 2).sample()
        rate = 1.0 + 0.5 * float((g[users] * h[items] * err2).sum())
        alpha = float(Gamma(torch.tensor(1.0 + n / 2, dtype=torch.float64), torch.tensor(rate, dtype=torch.float64)).sample())
        w = alpha * g[users] * h[items]
        mean_u, prec_u = _hyperparameters(U, config.beta0)
        U = _draw_rows(by_user.of(w), by_user.of(w * centred), V, mean_u, prec_u)
        mean_v, prec_v = _hyperparameters(V, config.beta0)
        V = _draw_rows(by_item.of(w), by_item.of(w * centred), U, mean_v, prec_v)
        if sweep >= config.burn_in and (sweep - config.burn_in) % config.thin == 0:
            kept_u.append(U)
            kept_v.append(V)
            train_sum += (U[users] * V[items]).sum(1).double()
            valid_sum += (U[v_users] * V[v_items]).sum(1).double()
        done = sweep + 1 - config.burn_in
        if kept_u and (done % config.report_every == 0 or sweep + 1 == config.sweeps):
            s = len(kept_u)
            train_pred = mu + train_sum / s
            row = [float(((train_pred - ratings) ** 2).mean())]
            if len(v_users):
                valid_pred = (mu + valid_sum / s).to(dtype)
                targets = valid.y.cpu()
                row += [float(((valid_pred - targets) ** 2).mean()), *(float(m(valid_pred, targets)) for m in learn.metrics)]
            else:
                row += [float("nan")] * (1 + len(learn.metrics))
            report = len(learn.recorder.values)
            learn.record_epoch(report, row, sweep + 1, time.perf_counter() - started)
            started = time.perf_counter()
            for cb in callbacks:
                cb.after_epoch(learn, report)
    for cb in callbacks:
        cb.after_fit(learn)
    scale = 1.0 / math.sqrt(len(kept_u))
    device = model.u_weight.weight.device
    with torch.no_grad():
        model.u_weight.weight.copy_((torch.cat(kept_u, 1) * scale).to(device))
        model.i_weight.weight.copy_((torch.cat(kept_v, 1) * scale).to(device))
        model.u_bias.weight.fill_(mu)
        model.i_bias.weight.zero_()
