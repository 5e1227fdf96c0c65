"""The lesson's names, so a fastai notebook runs with one changed import.

Replace ``from fastai.collab import *`` (or ``from fastai.tabular.all import *``)
with ``from collabkit.fastai import *``; the rest of the lesson's code runs as
written. This module is a skin over collabkit's core: it re-exports and adds
small adapters (fastai's argument orders and defaults), never a second
implementation of data or training.

Where fastai's behaviour is a trap, collabkit does the clean thing:

* ``dls.classes[name]`` has no ``#na#`` row, so ``len(dls.classes['user'])``
  is the true number of users (fastai's count is one higher). Ids seen only in
  the validation split still get a row; it is never trained.
* ``fit_one_cycle`` is ``torch.optim.lr_scheduler.OneCycleLR`` with fastai's
  defaults; see :mod:`collabkit.training.schedule` for how the two relate.
* ``learn.predict(row)`` returns the predicted rating as a float.
* ``CollabDataLoaders.from_df`` keeps repeated (user, item) rows as separate
  samples, as fastai does (the lesson's ``item_name='title'`` merges movies
  that share a title), and logs a warning saying how many there are. The core
  API and the CLI refuse duplicates unless told what to do with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn, tensor

from collabkit.data import loaders as _core
from collabkit.data.ratings import Duplicates
from collabkit.datasets import REGISTRY, dataset_folder
from collabkit.errors import ConfigError, DatasetNotFoundError
from collabkit.metrics import mae, rmse
from collabkit.models import DotProductBias, Embedding, EmbeddingNN, Module, create_params, sigmoid_range
from collabkit.models.nn import emb_sz_rule
from collabkit.training import Adam, Learner, MSELossFlat
from collabkit.training.callbacks import Callback, CancelFitException, EarlyStoppingCallback, SaveModelCallback
from collabkit.training.fused import load_in_background

__all__ = [
    "F",
    "Adam",
    "Callback",
    "CancelFitException",
    "CollabDataLoaders",
    "EarlyStoppingCallback",
    "Embedding",
    "EmbeddingDotBias",
    "EmbeddingNN",
    "Learner",
    "MSELossFlat",
    "Module",
    "Path",
    "SaveModelCallback",
    "URLs",
    "collab_learner",
    "create_params",
    "emb_sz_rule",
    "get_emb_sz",
    "mae",
    "nn",
    "np",
    "pd",
    "rmse",
    "sigmoid_range",
    "tensor",
    "torch",
    "untar_data",
]


def _display(frame: pd.DataFrame) -> None:
    """Show a table the way a notebook would, or as text outside one."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(frame)
            return
    except ImportError:
        pass
    print(frame.to_string(index=False))


class CollabDataLoaders(_core.CollabDataLoaders):
    """fastai's ``CollabDataLoaders``: ``from_df``/``from_csv`` with fastai's signature and defaults."""

    @classmethod
    def from_df(
        cls,
        ratings: pd.DataFrame,
        valid_pct: float = 0.2,
        user_name: str | None = None,
        item_name: str | None = None,
        rating_name: str | None = None,
        seed: int | None = None,
        path: str | Path = ".",
        bs: int = 64,
        val_bs: int | None = None,
        device: torch.device | str | None = None,
        duplicates: Duplicates = "keep",
    ) -> CollabDataLoaders:
        """Split ``ratings`` at random and batch it; columns default to the first three."""
        dls = super().from_df(
            ratings,
            valid_pct=valid_pct,
            user_name=user_name,
            item_name=item_name,
            rating_name=rating_name,
            seed=seed,
            bs=bs,
            val_bs=val_bs,
            duplicates=duplicates,
            device=device,
        )
        dls.path = Path(path)
        if dls.train.x.device.type == "cpu":
            load_in_background()  # the lesson's fit comes cells later: its compiled loop loads meanwhile
        return dls

    def show_batch(self, max_n: int = 9) -> None:
        """Display the first ``max_n`` rows of a training batch with raw ids."""
        _display(super().show_batch(max_n))


class EmbeddingDotBias(DotProductBias):
    """fastai's ``EmbeddingDotBias``: collabkit's :class:`DotProductBias` with fastai's argument order.

    Built by :func:`collab_learner` (or :meth:`from_classes`) it knows the
    vocabularies, so :meth:`bias` and :meth:`weight` take raw ids or titles.
    """

    def __init__(
        self, n_factors: int, n_users: int, n_items: int, y_range: tuple[float, float] | None = None
    ) -> None:
        super().__init__(n_users, n_items, n_factors, y_range)
        self.classes: dict[str, Any] | None = None
        self.user: str | None = None
        self.item: str | None = None

    @classmethod
    def from_classes(
        cls,
        n_factors: int,
        classes: dict,
        user: str | None = None,
        item: str | None = None,
        y_range: tuple[float, float] | None = None,
    ) -> EmbeddingDotBias:
        """Size the tables from ``classes`` (``dls.classes``) and remember them for lookups."""
        names = list(classes)
        user = names[0] if user is None else user
        item = names[1] if item is None else item
        model = cls(n_factors, len(classes[user]), len(classes[item]), y_range)
        model.classes, model.user, model.item = classes, user, item
        return model

    def _rows(self, arr: Sequence[Any], is_item: bool) -> torch.Tensor:
        if self.classes is None:
            raise ConfigError("build the model with EmbeddingDotBias.from_classes (or collab_learner) to look up raw ids")
        vocab = self.classes[self.item if is_item else self.user]
        return torch.from_numpy(vocab.index_strict(list(arr))).to(self.u_weight.weight.device)

    def bias(self, arr: Sequence[Any], is_item: bool = True) -> torch.Tensor:
        """Learned biases of the items (or users) named in ``arr``."""
        layer = self.i_bias if is_item else self.u_bias
        with torch.no_grad():
            return layer(self._rows(arr, is_item)).squeeze(1).cpu()

    def weight(self, arr: Sequence[Any], is_item: bool = True) -> torch.Tensor:
        """Learned factor vectors of the items (or users) named in ``arr``."""
        layer = self.i_weight if is_item else self.u_weight
        with torch.no_grad():
            return layer(self._rows(arr, is_item)).cpu()


def get_emb_sz(dls: _core.CollabDataLoaders, sz_dict: dict[str, int] | None = None) -> list[tuple[int, int]]:
    """``[(n_users, width), (n_items, width)]`` by fastai's rule, overridden per column by ``sz_dict``."""
    sz_dict = sz_dict or {}
    return [(len(v), int(sz_dict.get(name, emb_sz_rule(len(v))))) for name, v in dls.classes.items()]


def collab_learner(
    dls: _core.CollabDataLoaders,
    n_factors: int = 50,
    use_nn: bool = False,
    emb_szs: dict[str, int] | None = None,
    layers: Sequence[int] | None = None,
    config: dict[str, Any] | None = None,
    y_range: tuple[float, float] | None = None,
    loss_func=None,
    opt_func=Adam,
    lr: float = 1e-3,
    wd: float | None = None,
    metrics=None,
    cbs=None,
) -> Learner:
    """A :class:`Learner` over :class:`EmbeddingDotBias`, or over :class:`EmbeddingNN` with ``use_nn=True``.

    ``config`` passes ``ps``, ``embed_p`` and ``use_bn`` to ``EmbeddingNN``;
    ``layers`` defaults to ``[n_factors]``.
    """
    if use_nn:
        options = dict(config or {})
        unknown = set(options) - {"ps", "embed_p", "use_bn"}
        if unknown:
            raise ConfigError(f"config accepts ps, embed_p and use_bn, got {sorted(unknown)}")
        model = EmbeddingNN(get_emb_sz(dls, emb_szs), layers=layers or [n_factors], y_range=y_range, **options)
    else:
        model = EmbeddingDotBias.from_classes(n_factors, dls.classes, y_range=y_range)
    return Learner(
        dls, model, loss_func=loss_func or MSELossFlat(), opt_func=opt_func, lr=lr, wd=wd, metrics=metrics, cbs=cbs
    )


class URLs:
    """The dataset addresses the lesson passes to :func:`untar_data`."""

    ML_100k = REGISTRY["ml-100k"].url
    ML_SAMPLE = REGISTRY["ml-latest-small"].url


def untar_data(url: str) -> Path:
    """The local folder of the MovieLens dataset at ``url``, downloading it into the cache on first use.

    ``URLs.ML_SAMPLE`` is the bundled ml-latest-small; any other registry URL is
    looked up as :func:`collabkit.load_dataset` does (``$COLLABKIT_DATA_DIR``,
    the cache, then a checked download).
    """
    for name, entry in REGISTRY.items():
        if entry.url == url:
            return dataset_folder(name)
    raise DatasetNotFoundError(f"untar_data knows the MovieLens URLs of collabkit's registry, not {url!r}")
