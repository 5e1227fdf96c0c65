"""A whole training run from a table and a config: the path the CLI, ``cv`` and benchmarks share.

:class:`TrainConfig` names every choice of a run; :data:`PRESETS` holds the
named ones. :func:`train` turns a train/valid pair of tables into a fitted
:class:`~collabkit.training.Learner`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from collabkit.data.loaders import CollabDataLoaders
from collabkit.data.ratings import Duplicates
from collabkit.metrics import rmse
from collabkit.models import DotProduct, DotProductBias, EmbeddingNN, emb_sz_rule
from collabkit.training.bayes import BayesConfig, fit_bayes
from collabkit.training.bayes_svdpp import SVDppConfig, fit_bayes_svdpp
from collabkit.training.callbacks import Callback, EarlyStoppingCallback, SaveModelCallback
from collabkit.training.learner import Learner
from collabkit.training.sparse import fit_sparse

MODELS = ("dot", "dot-bias", "nn")
SOLVERS = ("sgd", "bayes", "bayes-svdpp", "sparse")


@dataclass(frozen=True)
class TrainConfig:
    """Every choice of a training run.

    ``solver="sgd"`` trains ``model`` with ``fit_one_cycle(epochs, lr, wd=wd)``
    at batch size ``bs``; ``solver="bayes"`` fits Bayesian PMF by Gibbs
    sampling (``sweeps``, ``burn_in``, ``thin``, with ``n_factors`` factors per
    sample; see :mod:`collabkit.training.bayes`); ``solver="bayes-svdpp"`` fits
    Bayesian SVD++ with biases and implicit factors on both sides the same way
    (:mod:`collabkit.training.bayes_svdpp`); ``solver="sparse"`` runs
    row-sparse SGD for ``epochs`` at ``lr`` with ``wd`` as the per-rating L2
    penalty (see :mod:`collabkit.training.sparse`). Both store a ``DotProductBias``.
    """

    solver: str = "sgd"
    model: str = "dot-bias"
    n_factors: int = 50
    layers: tuple[int, ...] = (100, 50)
    y_range: tuple[float, float] | None = None  # None: default_y_range of the training ratings
    epochs: int = 5
    lr: float = 5e-3
    wd: float = 0.1
    wd_mode: str = "decoupled"
    bs: int = 64
    seed: int = 42
    threads: int | None = 1
    sweeps: int = BayesConfig.sweeps  # the Gibbs sampler's own defaults, stated once (in BayesConfig)
    burn_in: int = BayesConfig.burn_in
    thin: int = BayesConfig.thin
    patience: int | None = None  # sgd: stop when valid_loss has not improved for this many epochs, keep the best

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver != "sgd" and self.model != "dot-bias":
            raise ValueError(f"the {self.solver} solver fits dot-bias models, not {self.model!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        for name in ("n_factors", "epochs", "bs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0 or self.wd < 0:
            raise ValueError(f"lr must be > 0 and wd >= 0, got lr={self.lr}, wd={self.wd}")
        if self.solver in ("bayes", "bayes-svdpp"):
            self.sampler()  # checks sweeps, burn_in, thin
        if self.patience is not None and (self.solver != "sgd" or self.patience < 1):
            raise ValueError(f"patience (early stopping) is a positive number of epochs for the sgd solver, "
                             f"got {self.patience!r} with solver {self.solver!r}")

    def bayes(self) -> BayesConfig:
        """The Gibbs sampler's settings."""
        return BayesConfig(n_factors=self.n_factors, sweeps=self.sweeps, burn_in=self.burn_in, thin=self.thin)

    def svdpp(self) -> SVDppConfig:
        """The Bayesian SVD++ sampler's settings."""
        return SVDppConfig(n_factors=self.n_factors, sweeps=self.sweeps, burn_in=self.burn_in, thin=self.thin)

    def sampler(self) -> BayesConfig | SVDppConfig:
        """The settings of this config's Gibbs sampler (solver "bayes" or "bayes-svdpp")."""
        return self.svdpp() if self.solver == "bayes-svdpp" else self.bayes()

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, TrainConfig] = {
    # Fast and accurate: Bayesian PMF, 10 factors, 30 Gibbs sweeps, 5 burn-in (u1: RMSE 0.906; docs/benchmarks.md).
    "default": TrainConfig(solver="bayes", n_factors=BayesConfig.n_factors),
    # Bayesian SVD++ (biases, implicit factors from the items each user rated and the users who rated each item),
    # a long chain: slower, more accurate (docs/benchmarks.md, "Accuracy"; chosen on a validation split of u1.base).
    "accurate": TrainConfig(solver="bayes-svdpp", n_factors=10, sweeps=500, burn_in=50, thin=10),
    # The course's recipe: DotProductBias, 50 factors, bs 64, fit_one_cycle(5, 5e-3, wd=0.1).
    "lesson": TrainConfig(),
    # Row-wise Adagrad for large data, with fit_sparse's own settings (lr 0.05, L2 0.02 per rating, 20 epochs).
    "sparse": TrainConfig(solver="sparse", n_factors=64, epochs=20, lr=0.05, wd=0.02),
}


def default_y_range(ratings: np.ndarray) -> tuple[float, float]:
    """0 (or the lowest rating if negative) to 10% above the highest: (0, 5.5) for 1-5 stars."""
    low = min(0.0, float(np.min(ratings)))
    high = float(np.max(ratings))
    return low, high + 0.1 * (high - low)


def build_model(config: TrainConfig, n_users: int, n_items: int, y_range: tuple[float, float] | None) -> nn.Module:
    """The model ``config`` names, sized for the vocabularies."""
    if config.model == "dot":
        return DotProduct(n_users, n_items, config.n_factors, y_range)
    if config.model == "dot-bias":
        return DotProductBias(n_users, n_items, config.n_factors, y_range)
    emb_szs = [(n_users, emb_sz_rule(n_users)), (n_items, emb_sz_rule(n_items))]
    return EmbeddingNN(emb_szs, layers=list(config.layers), y_range=y_range)


def prepare(
    config: TrainConfig,
    train_frame: pd.DataFrame,
    valid_frame: pd.DataFrame | None = None,
    columns: Sequence[str | None] = (None, None, None),
    duplicates: Duplicates = "error",
    device: torch.device | str = "cpu",
    cbs: Sequence[Callback] = (),
    progress: bool = False,
) -> Learner:
    """The data, model and :class:`Learner` of ``config``, ready to fit (see :func:`train`)."""
    torch.manual_seed(config.seed)
    valid_frame = train_frame.iloc[:0] if valid_frame is None else valid_frame
    dls = CollabDataLoaders.from_frames(
        train_frame, valid_frame, *columns, bs=config.bs, seed=config.seed, duplicates=duplicates, device=device
    )
    if config.solver != "sgd":
        width = config.sampler().model_factors if config.solver != "sparse" else config.n_factors
        model = DotProductBias(len(dls.users), len(dls.items), width, y_range=None)
    else:
        y_range = config.y_range if config.y_range is not None else default_y_range(dls.train.y.cpu().numpy())
        model = build_model(config, len(dls.users), len(dls.items), y_range)
    learn = Learner(
        dls,
        model,
        lr=config.lr,
        wd=config.wd,
        wd_mode=config.wd_mode,
        metrics=[rmse],
        cbs=list(cbs),
        progress=progress,
        n_threads=config.threads,
    )
    return learn


def train(
    config: TrainConfig,
    train_frame: pd.DataFrame,
    valid_frame: pd.DataFrame | None = None,
    columns: Sequence[str | None] = (None, None, None),
    duplicates: Duplicates = "error",
    device: torch.device | str = "cpu",
    cbs: Sequence[Callback] = (),
    progress: bool = False,
) -> Learner:
    """Fit ``config`` on ``train_frame``, validating on ``valid_frame`` (may be empty or ``None``).

    ``columns`` names the user, item and rating columns (default: the first
    three). The seed fixes the initial weights and the batch order.
    """
    learn = prepare(config, train_frame, valid_frame, columns, duplicates, device, cbs, progress)
    fit(learn, config)
    return learn


def fit(learn: Learner, config: TrainConfig, lr: float | None = None, checkpoint=None) -> None:
    """Run ``config``'s solver on a learner made by :func:`prepare` (``lr`` overrides the config's;
    ``checkpoint`` applies to the sgd solver, the only one that saves and resumes epochs)."""
    if checkpoint is not None and config.solver != "sgd":
        raise ValueError(f"checkpoints apply to the sgd solver; this config's solver is {config.solver!r}")
    lr = config.lr if lr is None else lr
    if config.solver == "bayes":
        fit_bayes(learn, config.bayes(), seed=config.seed)
    elif config.solver == "bayes-svdpp":
        fit_bayes_svdpp(learn, config.svdpp(), seed=config.seed)
    elif config.solver == "sparse":
        fit_sparse(learn, epochs=config.epochs, lr=lr, reg=config.wd, seed=config.seed)
    else:
        stop = [] if config.patience is None else [EarlyStoppingCallback(patience=config.patience), SaveModelCallback()]
        learn.fit_one_cycle(config.epochs, lr, wd=config.wd, checkpoint=checkpoint, cbs=stop)

