"""What a ranking model is: users' interactions in, a score for every item out.

A :class:`Ranker` is fitted on an :class:`~collabkit.data.interactions.Interactions`
matrix (who interacted with what) and scores items for users given the rows of
that matrix, so the same call ranks a trained user (their training row) and
someone new (a row built from a handful of items): fold-in is scoring.

Capabilities are declared, not guessed from class names:

* ``item_similarity``: the model can say which items are like a given one
  (:meth:`Ranker.similar_to`);
* every ranker scores; none predicts ratings (that is the rating model's job).

A new ranking model is one file (a subclass with ``name``, ``config``,
``fit``, ``score``, ``state``/``load_state``) and one line in
:mod:`collabkit.models.registry`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from collabkit.data.interactions import Interactions
from collabkit.errors import ModelFileError, NotFittedError


class Ranker:
    """Base class of the ranking models; subclasses set ``name`` and implement the methods below."""

    name: ClassVar[str]
    item_similarity: ClassVar[bool] = False
    n_items: int | None = None

    def config(self) -> dict:
        """The constructor's arguments, JSON-serialisable: ``type(self)(**config())`` is an unfitted copy."""
        raise NotImplementedError

    def fit(self, interactions: Interactions) -> Ranker:
        """Learn from ``interactions``; returns ``self``."""
        raise NotImplementedError

    def score(self, users: Interactions, user_rows: np.ndarray) -> torch.Tensor:
        """Scores ``(k, n_items)`` for ``k`` users, higher is better.

        Args:
            users: the ``k`` users' interactions (``k × n_items``; :meth:`Interactions.take` of the
                training matrix for trained users, a row built from their items for someone new).
            user_rows: ``(k,)`` each user's training row, or ``-1`` for someone new.
        """
        raise NotImplementedError

    def similar_to(self, row: int) -> torch.Tensor:
        """``(n_items,)`` how alike each item is to item ``row`` (models with ``item_similarity``)."""
        raise NotImplementedError(f"a {type(self).__name__} has no notion of item similarity")

    def state(self) -> dict[str, torch.Tensor]:
        """The fitted arrays, for safetensors."""
        raise NotImplementedError

    def load_state(self, tensors: dict[str, torch.Tensor], n_users: int, n_items: int) -> None:
        """Restore :meth:`state`; raises :class:`ModelFileError` when shapes do not fit the vocabularies."""
        raise NotImplementedError

    def _fitted(self) -> int:
        """The number of items of a fitted ranker; :class:`NotFittedError` before fit."""
        if self.n_items is None:
            raise NotFittedError(f"this {type(self).__name__} has not been fitted: call fit first")
        return self.n_items

    @staticmethod
    def _expect(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int | None, ...]]) -> None:
        """Check that ``tensors`` holds exactly ``shapes`` (``None``: any size along that axis)."""
        if set(tensors) != set(shapes):
            raise ModelFileError(f"ranker weights hold {sorted(tensors)}, expected {sorted(shapes)}")
        for key, shape in shapes.items():
            got = tuple(tensors[key].shape)
            if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
                raise ModelFileError(f"ranker weights {key!r} have shape {got}, expected {shape}")
            if tensors[key].is_floating_point() and not torch.isfinite(tensors[key]).all():
                raise ModelFileError(f"ranker weights {key!r} contain NaN or inf")
