"""Who interacted with what, and how strongly: the training input of the ranking models.

A rating model learns what a user would give an item *given that they rate
it*; a ranking model learns *which* items a user picks. Its input is an
:class:`Interactions` matrix, users × items in vocabulary rows, one value per
(user, item) pair that happened:

* **explicit feedback** (ratings): the value is the rating itself, shifted so
  the lowest rating of the table counts as 1 when some ratings are 0 or
  negative (:func:`rating_offset`; the offset is kept, so a new user's
  ratings become values the same way). A 5-star film weighs five times a
  1-star one: on ML-100K u1, tuned on a validation split carved from u1.base,
  rating-valued EASE ranks better than binary EASE (docs/benchmarks.md);
* **implicit feedback** (plays, clicks, purchases): the count or weight column
  when there is one, else 1. Repeated pairs add up.

Unlike :class:`~collabkit.data.history.RatingHistory` (every pair the data
held, validation included: what ``exclude_seen`` removes), this holds the
training pairs only, so scoring a user never reads a held-out interaction.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from collabkit.data.history import entry_rows, gather_rows, is_csr
from collabkit.errors import ConfigError, DataError


def rating_offset(ratings: np.ndarray) -> float:
    """What a rating adds to become an interaction value: 0, or ``1 - min`` when the lowest rating is not positive."""
    low = float(np.min(ratings)) if len(ratings) else 1.0
    return 0.0 if low > 0 else 1.0 - low


@dataclass
class Interactions:
    """A users × items matrix of positive interaction values, stored as CSR (rows sorted, no repeats)."""

    indptr: np.ndarray  # (n_users + 1,) int64
    indices: np.ndarray  # (nnz,) int64 item rows, sorted within each user
    values: np.ndarray  # (nnz,) float32, > 0
    n_items: int
    offset: float = 0.0  # added to a rating to make its value (explicit feedback; see rating_offset)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @classmethod
    def from_rows(
        cls, users: np.ndarray, items: np.ndarray, values: np.ndarray | None, n_users: int, n_items: int,
        offset: float = 0.0,
    ) -> Interactions:
        """Build from row arrays; ``values`` default to 1, repeated (user, item) pairs add up.
        ``offset`` is recorded only: ``values`` already include it."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        values = np.ones(len(users), dtype=np.float32) if values is None else np.asarray(values, dtype=np.float32)
        if not (len(users) == len(items) == len(values)):
            raise ConfigError(f"users, items and values differ in length: {len(users)}, {len(items)}, {len(values)}")
        if len(values) and not (np.isfinite(values).all() and (values > 0).all()):
            raise DataError("interaction values (counts or weights) must be finite and positive")
        code = users * n_items + items
        unique, inverse = np.unique(code, return_inverse=True)
        summed = np.bincount(inverse, weights=values, minlength=len(unique)).astype(np.float32)
        rows = unique // max(n_items, 1)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
        return cls(indptr, (unique % max(n_items, 1)).astype(np.int64), summed, int(n_items), float(offset))

    @classmethod
    def from_ratings(cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int, n_items: int
                     ) -> Interactions:
        """Explicit feedback: each rating plus :func:`rating_offset` is its value."""
        offset = rating_offset(ratings)
        return cls.from_rows(users, items, np.asarray(ratings, dtype=np.float32) + offset, n_users, n_items, offset)

    @property
    def item_counts(self) -> np.ndarray:
        """(n_items,) int64: how many users interacted with each item."""
        return np.bincount(self.indices, minlength=self.n_items).astype(np.int64)

    def row_users(self) -> np.ndarray:
        """(nnz,) the user row of every stored entry."""
        return entry_rows(self.indptr)

    def take(self, user_rows: np.ndarray) -> Interactions:
        """The rows of ``user_rows``, in that order, as a ``k × n_items`` matrix of their own (no Python loop)."""
        indptr, entries = gather_rows(self.indptr, user_rows)
        return Interactions(indptr, self.indices[entries], self.values[entries], self.n_items, self.offset)

    def csr(self, n_cols: int | None = None, columns: np.ndarray | None = None) -> torch.Tensor:
        """A torch sparse CSR tensor of the matrix; ``columns`` maps each item to a column (-1: left out)
        of ``n_cols`` columns."""
        indptr, indices, values = self.indptr, self.indices, self.values
        if columns is not None:
            cols = columns[indices]
            keep = cols >= 0
            kept = np.concatenate([[0], np.cumsum(keep)])
            indptr, indices, values = kept[indptr], cols[keep], values[keep]
        with warnings.catch_warnings():  # torch calls its sparse CSR support "beta"; products are all we use
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.from_numpy(np.ascontiguousarray(indptr, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)),
                (self.n_users, self.n_items if n_cols is None else n_cols), check_invariants=False,
            )

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """For safetensors (the two numbers as one-element tensors)."""
        return {
            "indptr": torch.from_numpy(self.indptr),
            "indices": torch.from_numpy(self.indices),
            "values": torch.from_numpy(self.values),
            "n_items": torch.tensor([self.n_items], dtype=torch.int64),
            "offset": torch.tensor([self.offset], dtype=torch.float64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Interactions:
        """The inverse of :meth:`to_tensors`; raises ``ValueError`` on arrays that do not fit together."""
        out = cls(
            tensors["indptr"].numpy().astype(np.int64),
            tensors["indices"].numpy().astype(np.int64),
            tensors["values"].numpy().astype(np.float32),
            int(tensors["n_items"][0]),
            float(tensors["offset"][0]),
        )
        if len(out.values) != len(out.indices) or not is_csr(out.indptr, out.indices, out.n_items):
            raise ConfigError("the interaction arrays do not describe a users x items matrix")
        return out
