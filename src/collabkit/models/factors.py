"""A rating model seen as vectors: what top-N, fold-in and similarity read from any rating model.

Every rating model in :data:`~collabkit.models.registry.RATING_MODELS` has a
``factor_view()`` returning a :class:`FactorView`, and names its id tables in
``ID_TABLES`` (the weights with one row per user and per item, checked against
the vocabularies when a model directory loads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from collabkit.models.layers import sigmoid_range


class RatingModel(Protocol):
    """What collabkit reads of a rating model besides its ``forward``: the extension point of ``models/``."""

    ID_TABLES: ClassVar[dict[str, str]]
    """The weights with a row per user and per item: ``{"user": name, "item": name}``."""

    def config(self) -> dict:
        """The constructor's arguments, JSON-ready: ``type(m)(**m.config())`` rebuilds the model."""
        ...

    def factor_view(self) -> FactorView:
        """The users and items as vectors, and how a pair of them becomes a rating."""
        ...


PAIRS_PER_CHUNK = 1 << 21
"""How many (user, item) pairs a neural model scores at once in :meth:`FactorView.grid`."""


@dataclass
class FactorView:
    """A model as user vectors, item vectors, and the function that turns a pair into a rating.

    Dot models (``head is None``) rate a pair as ``sigmoid_range(u · i, *y_range)``;
    a neural model passes the two vectors through its ``head``.
    """

    users: torch.Tensor  # (n_users, d_user)
    items: torch.Tensor  # (n_items, d_item)
    user_factors: torch.Tensor  # the taste vectors alone (no bias columns), for similarity
    item_factors: torch.Tensor
    fixed_tail: int = 0  # trailing user-vector entries that are constants (the 1 that meets b_i)
    y_range: tuple[float, float] | None = None
    head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def _output(self, scores: torch.Tensor) -> torch.Tensor:
        return scores if self.y_range is None else sigmoid_range(scores, *self.y_range)

    def pair(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Ratings of ``users[k]`` for ``items[k]``: ``(n, d)``, ``(n, d)`` -> ``(n,)``."""
        if self.head is not None:
            return self.head(users, items)
        return self._output((users * items).sum(1))

    def grid(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Ratings of every user in ``users`` (``(k, d)``) for every item in ``items`` (``(m, d)``): ``(k, m)``."""
        if self.head is None:
            return self._output(users @ items.T)
        k, m = len(users), len(items)
        rows = max(1, PAIRS_PER_CHUNK // max(m, 1))
        out = []
        for start in range(0, k, rows):
            chunk = users[start : start + rows]
            out.append(self.head(chunk.repeat_interleave(m, 0), items.repeat(len(chunk), 1)).view(len(chunk), m))
        return torch.cat(out) if out else users.new_empty((0, m))
