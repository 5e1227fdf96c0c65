"""Bayesian matrix factorisation by Gibbs sampling: collabkit's default rating model (bayes_svdpp.py: the more accurate, slower one).

The model (Bayesian PMF, Salakhutdinov & Mnih 2008, with a noise precision
per user and per item)::

    r_ui  ~ N(μ + U_u · V_i,  1 / (α g_u h_i))       μ: the mean training rating
    U_u   ~ N(μ_U, Λ_U⁻¹)      V_i ~ N(μ_V, Λ_V⁻¹)
    (μ_U, Λ_U), (μ_V, Λ_V) ~ Normal-Wishart(0, β₀, ν₀ = D, W₀ = I)
    α ~ Gamma(1, 1)            g_u, h_i ~ Gamma(c, c)   (mean 1: some users and items are noisier)

Every sweep draws, in turn, the user hyper-parameters, all users at once, the
users' noise precisions g, the item hyper-parameters, all items at once, h and
α, each given the latest values of the rest. A user's conditional is Gaussian
with precision ``Λ_U + α g_u Σ_i h_i V_i V_iᵀ``. Because the weight ``g_u h_i``
factorises, the sums for all users are sparse-times-dense products: the
(users × items) pattern of the ratings times a table of ``h_i V_i V_iᵀ`` (packed
lower triangles), the centred ratings times ``h_i V_i``, and their squares times
``h``. The same sums give each user's weighted squared error
``Σ_i h_i (r_ui - U_u · V_i)²`` for the draw of g, without a pass over the
ratings. Then one batched Cholesky factorisation and two triangular solves
draw every user. The random numbers come from one NumPy generator seeded by
``seed``, so a fit is reproducible.

The prediction is the posterior mean of ``μ + U_u · V_i``, averaged over the
samples kept after burn-in, Rao-Blackwellised: each kept sample pairs the users
drawn with the items' conditional means given those users, the exact
expectation of ``U_u · V_i`` over the items' draw, so fewer sweeps give the same
accuracy. It is stored as an ordinary ``DotProductBias`` (``y_range=None``): the
kept samples side by side, scaled by ``1/√S``, so that one dot product is the
average of the S sampled ones::

    [U¹ … Uˢ]/√S · [M¹ … Mˢ]/√S = (1/S) Σ_s Uˢ · Mˢ

The saved model therefore predicts, recommends, folds in new users and loads
exactly like any other.

Several processes (``collabkit train --nproc N``, or torchrun) run the same
chain. Each rank draws a contiguous share of the users and of the items
(:class:`RowShare`) and holds only those rows' ratings. Every rank draws the
random numbers of all rows, from the same seeded generator in the same order,
and uses its share's, so N processes follow the one-process chain. After each
half-sweep one ``all_gather`` gives every rank the whole table just drawn,
with the noise precisions (and, for items, the conditional means and squared
errors): a user's ratings reach most items, so nearly every row is needed on
every rank anyway, and the hyper-parameters are then drawn on every rank from
the whole tables, by the same code and in the same order as in one process.
Per sweep each rank contributes ``n_users (D + 1) + n_items (2D + 2)`` float64
values, and receives the other ranks' shares of them.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from collabkit import distributed
from collabkit.errors import ConfigError, TrainingDivergedError
from collabkit.models import DotProductBias

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BayesConfig:
    """Settings of the Gibbs sampler.

    The defaults (10 factors, 30 sweeps, 5 burn-in, every sample kept: 25)
    reach RMSE 0.906 on ML-100K u1 (docs/benchmarks.md). Starting the factors
    at a standard deviation of 0.5 rather than near zero is what lets the
    chain settle within a few sweeps.
    """

    n_factors: int = 10
    sweeps: int = 30
    burn_in: int = 5
    thin: int = 1  # keep every thin-th sample after burn-in (the model stores kept × n_factors columns)
    # the sampler's priors and reporting, not options of a training run (metadata: option False)
    noise_prior: float = field(default=2.0, metadata={"option": False})  # c in g_u, h_i ~ Gamma(c, c)
    beta0: float = field(default=2.0, metadata={"option": False})
    init_std: float = field(default=0.5, metadata={"option": False})
    report_every: int = field(default=25, metadata={"option": False})

    def __post_init__(self) -> None:
        if not 0 <= self.burn_in < self.sweeps:
            raise ConfigError(f"burn_in must be in [0, sweeps={self.sweeps}), got {self.burn_in}")
        if self.n_factors < 1 or self.thin < 1 or self.report_every < 1:
            raise ConfigError("n_factors, thin and report_every must be positive integers")
        if self.noise_prior <= 0 or self.beta0 <= 0 or self.init_std <= 0:
            raise ConfigError("noise_prior, beta0 and init_std must be positive")

    @property
    def kept(self) -> int:
        """How many samples the model averages."""
        return len(range(self.burn_in, self.sweeps, self.thin))

    @property
    def model_factors(self) -> int:
        """Columns of the stored factor tables: ``kept * n_factors``."""
        return self.kept * self.n_factors

    def checked_model(self, model, sampler: str) -> DotProductBias:
        """``model`` if a sampler of these settings can fill it: a ``DotProductBias`` without ``y_range`` and
        :attr:`model_factors` wide."""
        if not isinstance(model, DotProductBias) or model.y_range is not None:
            raise TypeError(f"{sampler} needs a DotProductBias model with y_range=None")
        if model.u_weight.embedding_dim != self.model_factors:
            raise ConfigError(
                f"the model has {model.u_weight.embedding_dim} factors; this sampler stores "
                f"{self.kept} samples x {self.n_factors} = {self.model_factors}"
            )
        return model


class Ratings:
    """The ratings seen from one side (rows × columns): sparse CSR matrices of the pattern (``ones``), the
    targets (``ratings``) and their squares, each row's entries contiguous; what :func:`draw_rows` reads.
    :meth:`set_targets` replaces the targets, as the SVD++ sampler does every sweep."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> None:
        self.order = torch.from_numpy(np.argsort(rows, kind="stable"))
        counts = np.bincount(rows, minlength=n_rows)
        self.crow = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self.col = torch.from_numpy(cols.astype(np.int64))[self.order]
        self.shape = (n_rows, n_cols)
        self.counts = counts.astype(np.float64)
        self.ones = self._csr(torch.ones(len(rows), dtype=torch.float64))
        self.set_targets(torch.from_numpy(np.asarray(values, dtype=np.float64)))

    def _csr(self, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # torch calls its sparse CSR support "beta"; these products are all we use
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)

    def set_targets(self, values: torch.Tensor) -> None:
        """The targets of the pairs, given in the caller's pair order."""
        self.values = values[self.order]  # in row order
        self.ratings, self.squares = self._csr(self.values), self._csr(self.values * self.values)


@dataclass(frozen=True)
class RowShare:
    """The users and items whose rows this process draws in every sweep (all of them in a single process):
    contiguous ranges from :func:`~collabkit.distributed.row_range`."""

    users: slice
    items: slice
    n_users: int
    n_items: int

    @classmethod
    def of_this_rank(cls, n_users: int, n_items: int) -> RowShare:
        return cls(slice(*distributed.row_range(n_users)), slice(*distributed.row_range(n_items)), n_users, n_items)

    def ratings(self, users: np.ndarray, items: np.ndarray, values: np.ndarray) -> tuple[Ratings, Ratings]:
        """The two :class:`Ratings` sides this process reads: its users' ratings and its items' ratings."""
        return (self._side(users, items, values, self.users, self.n_items),
                self._side(items, users, values, self.items, self.n_users))

    @staticmethod
    def _side(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, share: slice, n_cols: int) -> Ratings:
        if distributed.world_size() == 1:  # every row: the arrays as they are
            return Ratings(rows, cols, values, share.stop - share.start, n_cols)
        mine = (rows >= share.start) & (rows < share.stop)
        return Ratings(rows[mine] - share.start, cols[mine], values[mine], share.stop - share.start, n_cols)

    def gather_users(self, *blocks: torch.Tensor) -> list[torch.Tensor]:
        """The whole user tables from every rank's share (:func:`~collabkit.distributed.all_gather_rows`)."""
        return distributed.all_gather_rows(self.n_users, *blocks)

    def gather_items(self, *blocks: torch.Tensor) -> list[torch.Tensor]:
        return distributed.all_gather_rows(self.n_items, *blocks)


def _packed_outer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each row's ``x yᵀ``, lower triangle packed row by row: element (p, q ≤ p) at p(p+1)/2 + q."""
    return torch.cat([x[:, p:p + 1] * y[:, :p + 1] for p in range(x.shape[1])], 1)


def draw_rows(
    side: Ratings, others: torch.Tensor, a: torch.Tensor, b: torch.Tensor, prec: torch.Tensor,
    prec_mean: torch.Tensor, noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every row's draw from its Gaussian conditional.

    Row u, with ratings r_uj (centred) of columns j, weights ``a[u] b[j]`` and
    ``o_j = others[j]``: precision ``P = Λ + a[u] Σ_j b_j o_j o_jᵀ``,
    ``P m = Λμ + a[u] Σ_j b_j r_uj o_j`` (``prec`` is Λ, ``prec_mean`` is Λμ). Returns
    the draws ``m + L⁻ᵀ noise[u]`` (``P = L Lᵀ``, so their covariance is ``P⁻¹``), the
    means m, and each row's weighted squared error ``Σ_j b_j (r_uj - x_u · o_j)²``
    of its draw x_u, from the same sums: ``Σ b r² - 2 x · Σ b r o + xᵀ (Σ b o oᵀ) x``.
    """
    n, d = noise.shape
    weighted = others * b[:, None]
    quad = side.ones @ _packed_outer(weighted, others)  # Σ_j b_j o_j o_jᵀ, packed
    rated = side.ratings @ weighted
    squares = side.squares @ b
    P = prec.expand(n, d, d).clone()  # the factorisation reads the lower triangle only
    start = 0
    for p in range(d):
        P[:, p, :p + 1].addcmul_(a[:, None], quad[:, start:start + p + 1])
        start += p + 1
    L, info = torch.linalg.cholesky_ex(P)
    if info.any():
        raise TrainingDivergedError("the Gibbs sampler diverged: a conditional precision is not positive definite")
    forward = torch.linalg.solve_triangular(L, torch.addcmul(prec_mean, a[:, None], rated).unsqueeze(-1), upper=False)
    both = torch.linalg.solve_triangular(L.mT, torch.cat([forward, forward + noise.unsqueeze(-1)], 2), upper=True)
    means, draws = both[..., 0], both[..., 1]
    # xᵀ (Σ b o oᵀ) x = (xᵀ P x - xᵀ Λ x) / a, and xᵀ P x = |Lᵀ x|²
    root = (L.mT @ draws.unsqueeze(-1))[..., 0]
    quadratic = ((root * root).sum(1) - ((draws @ prec) * draws).sum(1)) / a
    errors = (squares - 2 * (draws * rated).sum(1) + quadratic).clamp_min_(0.0)
    return draws, means, errors


def normal_wishart(rows: np.ndarray, beta0: float, z: np.ndarray, chi2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A draw of (μ, Λ) from the Normal-Wishart posterior given ``rows`` (n × d).

    ``Λ ~ Wishart(d + n, S⁻¹)``, ``S = I + Σ (x - x̄)(x - x̄)ᵀ + β₀n/(β₀+n) x̄x̄ᵀ``, by Bartlett:
    ``Λ = F A Aᵀ Fᵀ`` with ``F = C⁻ᵀ`` (``S = C Cᵀ``), A lower triangular with
    ``A_jj = √chi2[j]`` (``chi2[j] ~ χ²(d + n - j)``) and ``A_pq = z[p, q]`` below
    the diagonal; then ``μ ~ N(n x̄/(β₀+n), ((β₀+n)Λ)⁻¹)`` with ``z[d]`` as its N(0, I) draw.
    """
    n, d = rows.shape
    mean = rows.mean(0)
    centred = rows - mean
    S = np.eye(d) + centred.T @ centred + beta0 * n / (beta0 + n) * np.outer(mean, mean)
    A = np.tril(z[:d], -1) + np.diag(np.sqrt(chi2))
    root = np.linalg.solve(np.linalg.cholesky(S).T, A)
    prec = root @ root.T
    factor = np.linalg.cholesky((beta0 + n) * prec)
    return n * mean / (beta0 + n) + np.linalg.solve(factor.T, z[d]), prec


def gibbs_sweep(
    by_user: Ratings, by_item: Ratings, U: torch.Tensor, V: torch.Tensor, g: torch.Tensor, h: torch.Tensor,
    alpha: float, unit_gamma: np.ndarray, normals: np.ndarray, noise_prior: float, beta0: float,
    share: RowShare | None = None,
):
    """One sweep (see the module's docstring); returns the new ``(U, V, V_mean, g, h, alpha)``,
    ``V_mean`` being the items' conditional means given the new U.

    ``by_user`` and ``by_item`` hold the ratings of ``share``'s rows (default: every row, one process); the
    tables come in and go out whole, on every rank.

    ``unit_gamma`` holds Gamma(shape, 1) draws, shapes ``c + n_u/2`` (users), ``c + n_i/2``
    (items), ``1 + N/2`` (α) and ``(d + n - j)/2`` for the two Wishart draws (users, items);
    ``normals`` the N(0, 1) draws: users × d, items × d, then (d + 1) × d for each Wishart.
    """
    (n_users, d), n_items, c = U.shape, V.shape[0], noise_prior
    share = share or RowShare(slice(0, n_users), slice(0, n_items), n_users, n_items)
    mine_u, mine_i = share.users, share.items
    gammas = np.split(unit_gamma, np.cumsum([n_users, n_items, 1, d]))
    noise = np.split(normals, np.cumsum([n_users * d, n_items * d, (d + 1) * d]))

    def prior(rows: torch.Tensor, z: np.ndarray, gamma: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Λ, Λμ)`` of one side's Normal-Wishart draw."""
        mean, prec = normal_wishart(rows.numpy(), beta0, z.reshape(d + 1, d), 2 * gamma)
        return torch.from_numpy(prec), torch.from_numpy(prec @ mean)

    U, _, errors = draw_rows(by_user, V, alpha * g[mine_u], h, *prior(U, noise[2], gammas[3]),
                             torch.from_numpy(noise[0]).view(n_users, d)[mine_u])
    g = torch.from_numpy(gammas[0][mine_u]) / (c + alpha * errors / 2)  # Gamma(c + n_u/2, c + α Σ_i h_i e²/2)
    U, g = share.gather_users(U, g)
    V, V_mean, errors = draw_rows(by_item, U, alpha * h[mine_i], g, *prior(V, noise[3], gammas[4]),
                                  torch.from_numpy(noise[1]).view(n_items, d)[mine_i])
    h = torch.from_numpy(gammas[1][mine_i]) / (c + alpha * errors / 2)  # Gamma(c + n_i/2, c + α Σ_u g_u e²/2)
    V, V_mean, h, errors = share.gather_items(V, V_mean, h, errors)
    alpha = float(gammas[2][0]) / (1.0 + float(h @ errors) / 2)  # Gamma(1 + N/2, 1 + Σ g_u h_i e²/2)
    return U, V, V_mean, g, h, alpha


class Chain:
    """The frame both Gibbs samplers sweep in, as a learner's fit: a report period (``report_every`` sweeps
    after burn-in) is one epoch, with the callbacks' ``before_epoch`` when it opens and a recorded row of the
    posterior mean so far when it closes.

    Use it as ``with Chain(learn, config) as chain:``, and in every sweep ``chain.begin()``; then
    :meth:`keeps` says whether the sweep's sample is kept, :meth:`due` whether a report is, and
    :meth:`report` records it. A callback cannot stop a chain (the model's width is kept samples × factors,
    fixed before sampling); the first that asks is told so in the log.
    """

    def __init__(self, learn, config: BayesConfig) -> None:
        self.learn, self.config = learn, config
        self.open = False  # between a report period's before_epoch and its report
        self.warned = False
        self.started = time.perf_counter()

    def __enter__(self) -> Chain:
        reports = math.ceil((self.config.sweeps - self.config.burn_in) / self.config.report_every)
        self._fitting = self.learn.fitting(reports)
        self.callbacks = self._fitting.__enter__()
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._fitting.__exit__(*exc)

    def begin(self) -> None:
        """Open a report period if none is open (the callbacks' ``before_epoch``)."""
        if not self.open:
            self.learn.before_epoch(self.callbacks, len(self.learn.recorder.values))
            self.open = True

    def keeps(self, sweep: int) -> bool:
        """Whether the sample of ``sweep`` (0-based) is kept: past burn-in, every ``thin``-th."""
        return sweep >= self.config.burn_in and (sweep - self.config.burn_in) % self.config.thin == 0

    def due(self, sweep: int, kept: int) -> bool:
        """Whether a report is due after ``sweep``, with ``kept`` samples kept so far."""
        done = sweep + 1 - self.config.burn_in
        return kept > 0 and (done % self.config.report_every == 0 or sweep + 1 == self.config.sweeps)

    def report(self, sweep: int, train_mean: torch.Tensor, train_target: torch.Tensor,
               valid_mean: torch.Tensor | None, valid_target: torch.Tensor | None = None) -> None:
        """Record the posterior mean so far after ``sweep``: the learner's loss on the training pairs
        (``train_mean`` against ``train_target``), its loss and metrics on the validation rows (``valid_mean``,
        or ``None`` without any), and show the row to the callbacks.

        In several processes each rank passes its share of the pairs (``valid_target``: its validation
        targets) and the row comes from the ranks' summed errors (:meth:`Learner.reduce_metrics`)."""
        learn = self.learn
        if distributed.world_size() > 1:
            row = [learn.reduce_metrics(train_mean, train_target)[0]]
            if valid_mean is not None:
                row += learn.reduce_metrics(valid_mean, valid_target)
        else:
            row = [float(learn.loss_func(train_mean.float(), train_target.float()))]
            if valid_mean is not None:
                valid_pred, targets = valid_mean.float(), learn.dls.valid.y.cpu()
                row += [float(learn.loss_func(valid_pred, targets)),
                        *(float(m(valid_pred, targets)) for m in learn.metrics)]
        if valid_mean is None:
            row += [float("nan")] * (1 + len(learn.metrics))
        epoch = len(learn.recorder.values)
        learn.record_epoch(epoch, row, sweep + 1, time.perf_counter() - self.started)
        if learn.after_epoch(self.callbacks, epoch) and not self.warned:
            log.warning("a callback asked to stop early; the Gibbs sampler keeps a fixed number of samples, so it "
                        "runs all %d sweeps", self.config.sweeps)
            self.warned = True
        self.started = time.perf_counter()
        self.open = False


def fit_bayes(learn, config: BayesConfig = BayesConfig(), seed: int = 0) -> None:
    """Fill ``learn.model`` (a ``DotProductBias`` with ``config.model_factors`` factors and no
    ``y_range``) with the posterior mean of Bayesian PMF fitted to ``learn.dls.train``.

    Every ``config.report_every`` sweeps (after burn-in) the recorder gets a row
    ``[train_mse, valid_mse, *metrics]`` of the posterior mean so far, and the
    learner's callbacks see it as an epoch.

    In several processes (torch.distributed) every rank runs this with the same ``seed``: each draws its
    :class:`RowShare` of the rows, and all end with the same model, the one-process chain's up to the order
    of floating-point sums.
    """
    model = config.checked_model(learn.model, "fit_bayes")
    rng = np.random.default_rng(seed)
    train, valid = learn.dls.train, learn.dls.valid
    users, items = train.x[:, 0].cpu().numpy(), train.x[:, 1].cpu().numpy()
    ratings = train.y.cpu().double()
    n_users, n_items, n = model.u_weight.num_embeddings, model.i_weight.num_embeddings, len(ratings)
    mu = float(ratings.mean())
    centred = ratings.numpy() - mu
    share = RowShare.of_this_rank(n_users, n_items)
    by_user, by_item = share.ratings(users, items, centred)
    d, c = config.n_factors, config.noise_prior
    U = torch.from_numpy(config.init_std * rng.standard_normal((n_users, d)))
    V = torch.from_numpy(config.init_std * rng.standard_normal((n_items, d)))
    g, h, alpha = torch.ones(n_users, dtype=torch.float64), torch.ones(n_items, dtype=torch.float64), 2.0
    shapes = np.concatenate([
        c + np.bincount(users, minlength=n_users) / 2, c + np.bincount(items, minlength=n_items) / 2, [1.0 + n / 2],
        (d + n_users - np.arange(d)) / 2, (d + n_items - np.arange(d)) / 2,
    ])
    n_normals = (n_users + n_items + 2 * (d + 1)) * d
    kept_u, kept_v = [], []
    train_sum = torch.zeros(len(by_user.values), dtype=torch.float64)  # in by_user's order
    valid_rows = slice(*distributed.row_range(valid.n))  # this rank's share of the validation rows
    v_users, v_items = valid.x[valid_rows, 0].cpu().long(), valid.x[valid_rows, 1].cpu().long()
    valid_sum = torch.zeros(len(v_users), dtype=torch.float64)
    summed = 0  # kept samples already in train_sum
    with Chain(learn, config) as chain:
        for sweep in range(config.sweeps):
            chain.begin()
            U, V, V_mean, g, h, alpha = gibbs_sweep(
                by_user, by_item, U, V, g, h, alpha, rng.standard_gamma(shapes), rng.standard_normal(n_normals),
                c, config.beta0, share,
            )
            if not (math.isfinite(alpha) and torch.isfinite(V).all()):
                raise TrainingDivergedError(f"the Gibbs sampler diverged at sweep {sweep + 1}")
            if chain.keeps(sweep):
                kept_u.append(U)
                kept_v.append(V_mean)
                valid_sum += (U[v_users] * V_mean[v_items]).sum(1)
            if chain.due(sweep, len(kept_u)):
                s = len(kept_u)
                # the training predictions of the samples kept since the last report, in one product
                new_u, new_v = torch.cat(kept_u[summed:], 1), torch.cat(kept_v[summed:], 1)
                train_sum += torch.sparse.sampled_addmm(by_user.ones, new_u[share.users], new_v.T, beta=0.0).values()
                summed = s
                valid_mean = mu + valid_sum / s if valid.n else None
                chain.report(sweep, train_sum / s, by_user.values, valid_mean, valid.y[valid_rows].cpu())
    store_posterior_mean(model, kept_u, kept_v, torch.full((len(U),), mu), torch.zeros(len(V)))


def store_posterior_mean(model: DotProductBias, kept_u: list[torch.Tensor], kept_v: list[torch.Tensor],
                         user_bias: torch.Tensor, item_bias: torch.Tensor) -> None:
    """Write a chain's posterior mean into ``model``: the kept samples' factors side by side, each table scaled
    by ``1/√S``, so that the dot product is the mean of the samples' dot products; and the biases given."""
    scale = 1.0 / math.sqrt(len(kept_u))
    device = model.u_weight.weight.device
    with torch.no_grad():
        model.u_weight.weight.copy_((torch.cat(kept_u, 1) * scale).to(device))
        model.i_weight.weight.copy_((torch.cat(kept_v, 1) * scale).to(device))
        model.u_bias.weight.copy_(user_bias.reshape(-1, 1).to(device))
        model.i_bias.weight.copy_(item_bias.reshape(-1, 1).to(device))


class GibbsSolver:
    """The solver entry of Bayesian PMF (:data:`~collabkit.training.solvers.SOLVERS` ``"bayes"``)."""

    name = "bayes"
    settings_class = BayesConfig
    renamed: dict[str, str] = {}
    resumable = False
    multiprocess = True  # each rank draws a share of the rows (RowShare)

    def build_model(self, settings: BayesConfig, n_users: int, n_items: int, ratings: np.ndarray) -> DotProductBias:
        return DotProductBias(n_users, n_items, settings.model_factors, y_range=None)

    def learner_options(self, settings: BayesConfig) -> dict[str, Any]:
        return {}

    def fit(self, learn, settings: BayesConfig, seed: int, lr: float | None = None, checkpoint=None) -> None:
        fit_bayes(learn, settings, seed=seed)


GIBBS = GibbsSolver()
