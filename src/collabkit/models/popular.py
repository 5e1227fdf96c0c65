"""The most-popular chart: every user gets the items the most users interacted with.

The baseline any ranking model must beat (``evaluate`` prints it beside the
model's own figures)::

    score(u, i) = number of training users who interacted with i
"""

from __future__ import annotations

import numpy as np
import torch

from collabkit.data.interactions import Interactions
from collabkit.models.ranker import Ranker


class Popularity(Ranker):
    """Items ranked by how many users interacted with them, the same list for everyone."""

    name = "popular"

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None

    def config(self) -> dict:
        return {}

    def fit(self, interactions: Interactions) -> Popularity:
        self.counts = torch.from_numpy(interactions.item_counts.astype(np.float32))
        self.n_items = interactions.n_items
        return self

    def _counts(self) -> torch.Tensor:
        """The fitted item counts (NotFittedError before fit)."""
        self._fitted()
        assert self.counts is not None  # (set whenever n_items is)
        return self.counts

    def score(self, users: Interactions, user_rows: np.ndarray) -> torch.Tensor:
        counts = self._counts()
        return counts.expand(users.n_users, -1).clone()

    def state(self) -> dict[str, torch.Tensor]:
        return {"counts": self._counts()}

    def load_state(self, tensors: dict[str, torch.Tensor], n_users: int, n_items: int) -> None:
        self._expect(tensors, {"counts": (n_items,)})
        self.counts, self.n_items = tensors["counts"].float(), n_items
