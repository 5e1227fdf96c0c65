"""The lesson's solver: a model of the lesson's kinds trained with ``fit_one_cycle`` and dense AdamW.

:class:`SGDConfig` holds its settings (the course's recipe by default:
``DotProductBias``, 50 factors, bs 64, ``fit_one_cycle(5, 5e-3, wd=0.1)``), and
:data:`SGD` is its entry in :data:`~collabkit.training.solvers.SOLVERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from collabkit.errors import ConfigError
from collabkit.models import DotProduct, DotProductBias, EmbeddingNN, emb_sz_rule
from collabkit.models.layers import checked_y_range, positive_int, positive_ints
from collabkit.training.callbacks import EarlyStoppingCallback, SaveModelCallback
from collabkit.training.optim import check_wd_mode

MODELS = ("dot", "dot-bias", "nn")


def default_y_range(ratings: np.ndarray) -> tuple[float, float]:
    """0 (or the lowest rating if negative) to 10% above the highest: (0, 5.5) for 1-5 stars."""
    low = min(0.0, float(np.min(ratings)))
    high = float(np.max(ratings))
    return low, high + 0.1 * (high - low)


@dataclass(frozen=True)
class SGDConfig:
    """The SGD solver's settings. ``y_range=None`` takes :func:`default_y_range` of the training ratings;
    ``patience`` stops early (:class:`~collabkit.training.callbacks.EarlyStoppingCallback`) and keeps the best
    epoch's weights."""

    model: str = "dot-bias"
    n_factors: int = 50
    layers: tuple[int, ...] = (100, 50)
    y_range: tuple[float, float] | None = None
    epochs: int = 5
    lr: float = 5e-3
    wd: float = 0.1
    wd_mode: str = "decoupled"
    bs: int = 64
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {MODELS}, got {self.model!r}")
        for name in ("n_factors", "epochs", "bs"):
            positive_int(name, getattr(self, name))
        object.__setattr__(self, "layers", tuple(positive_ints("layers", self.layers)))
        checked_y_range(self.y_range)
        if not self.lr > 0 or not self.wd >= 0:
            raise ConfigError(f"lr must be > 0 and wd >= 0, got lr={self.lr}, wd={self.wd}")
        check_wd_mode(self.wd_mode)
        if self.patience is not None:
            positive_int("patience (early stopping, in epochs)", self.patience)


class SGDSolver:
    name = "sgd"
    settings_class = SGDConfig
    renamed: dict[str, str] = {}
    resumable = True
    multiprocess = True  # DistributedDataParallel

    def build_model(self, settings: SGDConfig, n_users: int, n_items: int, ratings: np.ndarray) -> nn.Module:
        y_range = settings.y_range if settings.y_range is not None else default_y_range(ratings)
        if settings.model == "dot":
            return DotProduct(n_users, n_items, settings.n_factors, y_range)
        if settings.model == "dot-bias":
            return DotProductBias(n_users, n_items, settings.n_factors, y_range)
        emb_szs = [(n_users, emb_sz_rule(n_users)), (n_items, emb_sz_rule(n_items))]
        return EmbeddingNN(emb_szs, layers=list(settings.layers), y_range=y_range)

    def learner_options(self, settings: SGDConfig) -> dict[str, Any]:
        return {"lr": settings.lr, "wd": settings.wd, "wd_mode": settings.wd_mode}

    def fit(self, learn, settings: SGDConfig, seed: int, lr: float | None = None, checkpoint=None) -> None:
        stop = [] if settings.patience is None else [EarlyStoppingCallback(patience=settings.patience),
                                                     SaveModelCallback()]
        learn.fit_one_cycle(settings.epochs, settings.lr if lr is None else lr, wd=settings.wd, checkpoint=checkpoint,
                            cbs=stop)


    def resume(self, learn, settings: SGDConfig, seed: int, checkpoint) -> None:
        learn.resume(checkpoint)


SGD = SGDSolver()
