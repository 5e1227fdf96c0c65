"""A whole training run from a table and a config: the path the CLI, ``cv``, the estimators and benchmarks share.

:class:`TrainConfig` names the choices of a run: the solver, the seed, the
threads, and the options the solver reads (left ``None``, each takes that
solver's own default); :data:`PRESETS` holds the named ones. :func:`train` turns
a train/valid pair of tables into a fitted :class:`~collabkit.training.Learner`.
The solvers themselves are in :data:`~collabkit.training.solvers.SOLVERS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from collabkit.data.loaders import CollabDataLoaders
from collabkit.data.ratings import Duplicates
from collabkit.errors import ConfigError
from collabkit.metrics import rmse
from collabkit.training import solvers
from collabkit.training.callbacks import Callback
from collabkit.training.learner import Learner
from collabkit.training.sgd import MODELS
from collabkit.training.solvers import SOLVERS

__all__ = ["MODELS", "PRESETS", "SOLVERS", "TrainConfig", "fit", "prepare", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """The choices of a training run.

    ``solver`` names one of :data:`SOLVERS`: ``"sgd"`` (the lesson's
    ``fit_one_cycle`` with dense AdamW; :class:`~collabkit.training.sgd.SGDConfig`),
    ``"bayes"`` (Bayesian PMF by Gibbs sampling; :class:`~collabkit.training.bayes.BayesConfig`),
    ``"bayes-svdpp"`` (Bayesian SVD++ by Gibbs sampling; :class:`~collabkit.training.bayes_svdpp.SVDppConfig`)
    or ``"sparse"`` (row-sparse Adagrad, ``wd`` its L2 penalty per rating;
    :class:`~collabkit.training.sparse.SparseConfig`). The other fields are the
    solvers' options: one left ``None`` takes the solver's own default, and one
    given that the solver does not read is refused. :meth:`settings` is what the
    solver runs with.
    """

    solver: str = "sgd"
    model: str | None = None
    n_factors: int | None = None
    layers: tuple[int, ...] | None = None
    y_range: tuple[float, float] | None = None  # sgd; None: default_y_range of the training ratings
    epochs: int | None = None
    lr: float | None = None
    wd: float | None = None
    wd_mode: str | None = None
    bs: int | None = None
    seed: int = 42
    threads: int | None = 1
    sweeps: int | None = None
    burn_in: int | None = None
    thin: int | None = None
    patience: int | None = None  # sgd: stop when valid_loss has not improved for this many epochs, keep the best

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {tuple(SOLVERS)}, got {self.solver!r}")
        reads = solvers.options(SOLVERS[self.solver])
        stray = [f.name for f in dataclasses.fields(self)
                 if f.name not in ("solver", "seed", "threads") and f.name not in reads and getattr(self, f.name) is not None]
        if stray:
            users = [name for name, s in SOLVERS.items() if stray[0] in solvers.options(s)]
            raise ConfigError(f"{', '.join(stray)} does not apply to the {self.solver} solver; leave it out or choose "
                             f"solver {' or '.join(map(repr, users))}")
        self.settings()  # checks the values

    def settings(self) -> Any:
        """The solver's own frozen settings: the options given here, its defaults for the rest."""
        return solvers.settings_from(SOLVERS[self.solver], self)

    def record(self) -> dict[str, Any]:
        """What the run used, as a model's info records it: solver, seed, threads and every option the solver
        reads, resolved (under this class's names)."""
        return {"solver": self.solver, "seed": self.seed, "threads": self.threads,
                **solvers.record(SOLVERS[self.solver], self.settings())}

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, TrainConfig] = {
    # Fast and accurate: Bayesian PMF, 10 factors, 30 Gibbs sweeps, 5 burn-in (u1: RMSE 0.906; docs/benchmarks.md).
    "default": TrainConfig(solver="bayes"),
    # The most accurate, slower: Bayesian SVD++ (biases, implicit factors from the items each user rated and the
    # users who rated each item), 10 factors, 500 sweeps, 50 burn-in, every 10th kept: SVDppConfig's own defaults,
    # chosen on a validation split of u1.base (u1: RMSE 0.885; docs/benchmarks.md, "Accuracy").
    "accurate": TrainConfig(solver="bayes-svdpp"),
    # The course's recipe: DotProductBias, 50 factors, bs 64, fit_one_cycle(5, 5e-3, wd=0.1).
    "lesson": TrainConfig(),
    # Row-wise Adagrad for large data, with fit_sparse's own settings (64 factors, lr 0.05, L2 0.02 per rating,
    # 20 epochs).
    "sparse": TrainConfig(solver="sparse"),
}


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
    user_col, item_col, rating_col = columns
    solver, settings = SOLVERS[config.solver], config.settings()
    torch.manual_seed(config.seed)
    valid_frame = train_frame.iloc[:0] if valid_frame is None else valid_frame
    dls = CollabDataLoaders.from_frames(
        train_frame, valid_frame, user_col, item_col, rating_col, bs=solvers.batch_size(settings), seed=config.seed,
        duplicates=duplicates, device=device,
    )
    model = solver.build_model(settings, len(dls.users), len(dls.items), dls.train.y.cpu().numpy())
    return Learner(dls, model, metrics=[rmse], cbs=list(cbs), progress=progress, n_threads=config.threads,
                   **solver.learner_options(settings))


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
    ``checkpoint`` applies to the solvers that save and resume epochs: sgd, sparse)."""
    solver = SOLVERS[config.solver]
    if checkpoint is not None and not solver.resumable:
        raise ConfigError(f"checkpoints apply to the sgd and sparse solvers; this config's solver is {config.solver!r}")
    solver.fit(learn, config.settings(), config.seed, lr=lr, checkpoint=checkpoint)


def resume(learn: Learner, config: TrainConfig, checkpoint) -> None:
    """Continue the run of ``config`` saved in ``checkpoint`` (by :func:`fit`), writing further checkpoints there."""
    solver = SOLVERS[config.solver]
    if not (solver.resumable and isinstance(solver, solvers.Resumes)):
        raise ConfigError(f"checkpoints apply to the sgd and sparse solvers; this config's solver is {config.solver!r}")
    solver.resume(learn, config.settings(), config.seed, checkpoint)
