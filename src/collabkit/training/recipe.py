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
from collabkit.training.callbacks import Callback
from collabkit.training.learner import Learner

MODELS = ("dot", "dot-bias", "nn")


@dataclass(frozen=True)
class TrainConfig:
    """Every choice of a training run (``fit_one_cycle`` with these settings)."""

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

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        for name in ("n_factors", "epochs", "bs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0 or self.wd < 0:
            raise ValueError(f"lr must be > 0 and wd >= 0, got lr={self.lr}, wd={self.wd}")

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, TrainConfig] = {
    # The course's recipe: DotProductBias, 50 factors, bs 64, fit_one_cycle(5, 5e-3, wd=0.1).
    "lesson": TrainConfig(),
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
    learn.fit_one_cycle(config.epochs, config.lr, wd=config.wd)
    return learn
