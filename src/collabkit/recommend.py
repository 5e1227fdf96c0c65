"""Ask a fitted model questions in raw ids: predicted ratings for (user, item) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from collabkit.data.vocab import Vocabulary
from collabkit.errors import NotFittedError
from collabkit.io import load_model, save_model


class Recommender:
    """A trained model together with the vocabularies that give its rows meaning.

    Build one from a fitted learner (:meth:`from_learner`) or a saved model
    directory (:meth:`load`).

    Args:
        model: maps ``(n, 2)`` (user row, item row) to ``(n,)`` ratings.
        users, items: the vocabularies of the model's rows.
        columns: ``{"user": ..., "item": ..., "rating": ...}`` column names.
        titles: optional title per item row.
        info: metadata kept with a saved model.
    """

    def __init__(
        self,
        model: nn.Module,
        users: Vocabulary,
        items: Vocabulary,
        columns: dict[str, str] | None = None,
        titles: Sequence[str | None] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.users, self.items = users, items
        self.columns = columns or {"user": users.name, "item": items.name, "rating": "rating"}
        self.titles = list(titles) if titles is not None else None
        self.info = info or {}

    @classmethod
    def from_learner(cls, learn, titles: dict | None = None, info: dict[str, Any] | None = None) -> Recommender:
        """Wrap a fitted :class:`~collabkit.training.Learner`; ``titles`` maps raw item id -> title."""
        if not learn.recorder.values:
            raise NotFittedError("the learner has not been trained: call fit or fit_one_cycle first")
        dls = learn.dls
        columns = {"user": dls.user_name, "item": dls.item_name, "rating": dls.rating_name}
        row_titles = [titles.get(i) for i in dls.items] if titles is not None else None
        return cls(learn.model, dls.users, dls.items, columns, row_titles, info)

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model directory written by :meth:`save` (no pickle; see :mod:`collabkit.io`)."""
        loaded = load_model(path)
        return cls(loaded.model, loaded.users, loaded.items, loaded.columns, loaded.titles, loaded.info)

    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically; see :func:`collabkit.io.save_model`."""
        return save_model(path, self.model, self.users, self.items, self.columns, self.titles, self.info)

    def title(self, item: Any) -> str | None:
        """The title of a raw item id, or ``None`` when titles are unknown."""
        if self.titles is None:
            return None
        return self.titles[int(self.items.index_strict([item])[0])]

    def predict(self, users: Sequence[Any], items: Sequence[Any]) -> np.ndarray:
        """Predicted ratings for each ``(users[k], items[k])`` pair of raw ids.

        Raises:
            UnknownIdError: an id is not in the model's vocabulary (it names it).
        """
        if len(users) != len(items):
            raise ValueError(f"users and items must have the same length, got {len(users)} and {len(items)}")
        x = np.stack([self.users.index_strict(users), self.items.index_strict(items)], axis=1)
        device = next(self.model.parameters()).device
        self.model.eval()
        with torch.no_grad():
            return self.model(torch.from_numpy(x).to(device)).reshape(-1).cpu().numpy()
