"""Who rated what: the interactions behind a model, kept with it for top-N and fallbacks.

A :class:`RatingHistory` stores, in vocabulary rows:

* every (user, item) pair the model's data held, train and validation alike, as
  a CSR matrix (``indptr``, ``indices``): what ``exclude_seen`` removes;
* which users and items the model was *trained* on (a row that appears only in
  validation was never fitted, so its factors are noise);
* the mean training rating, the prediction of last resort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def is_csr(indptr: np.ndarray, indices: np.ndarray, n_cols: int) -> bool:
    """Whether ``indptr`` and ``indices`` describe a sparse rows × ``n_cols`` matrix (CSR): ``indptr`` starts at
    0, never falls and ends at ``len(indices)``, and every column index is in ``[0, n_cols)``."""
    return bool(
        len(indptr) > 0 and indptr[0] == 0 and indptr[-1] == len(indices) and not (np.diff(indptr) < 0).any()
        and not (len(indices) and (indices.min() < 0 or indices.max() >= n_cols))
    )


def entry_rows(indptr: np.ndarray) -> np.ndarray:
    """The row of every stored entry of a CSR matrix with row pointers ``indptr``."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def gather_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, entries)`` of the CSR matrix made of ``rows`` (in that order): its row pointers, and the
    positions of its entries in the original arrays. No Python loop."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    out = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out, np.repeat(starts - out[:-1], counts) + np.arange(out[-1])


@dataclass
class RatingHistory:
    """Interactions and training coverage, by vocabulary row."""

    indptr: np.ndarray  # (n_users + 1,) int64: user u's items are indices[indptr[u]:indptr[u+1]]
    indices: np.ndarray  # (nnz,) int64 item rows, sorted within each user
    user_trained: np.ndarray  # (n_users,) bool
    item_counts: np.ndarray  # (n_items,) int64: training ratings per item
    global_mean: float

    @property
    def item_trained(self) -> np.ndarray:
        """(n_items,) bool: items with at least one training rating."""
        return self.item_counts > 0

    @classmethod
    def from_pairs(
        cls, all_pairs: np.ndarray, train_pairs: np.ndarray, train_ratings: np.ndarray, n_users: int, n_items: int
    ) -> RatingHistory:
        """Build from ``(n, 2)`` row pairs: every known pair, and the training pairs with their ratings."""
        all_pairs = np.asarray(all_pairs, dtype=np.int64).reshape(-1, 2)
        train_pairs = np.asarray(train_pairs, dtype=np.int64).reshape(-1, 2)
        order = np.lexsort((all_pairs[:, 1], all_pairs[:, 0]))
        users, items = all_pairs[order, 0], all_pairs[order, 1]
        keep = np.ones(len(users), dtype=bool)  # drop repeated pairs (duplicates='keep')
        keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
        users, items = users[keep], items[keep]
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
        user_trained = np.bincount(train_pairs[:, 0], minlength=n_users) > 0
        item_counts = np.bincount(train_pairs[:, 1], minlength=n_items).astype(np.int64)
        mean = float(np.mean(train_ratings)) if len(train_ratings) else float("nan")
        return cls(indptr, items, user_trained, item_counts, mean)

    @classmethod
    def from_dls(cls, dls) -> RatingHistory:
        """The history of a :class:`~collabkit.data.CollabDataLoaders` (both splits)."""
        train_x, valid_x = dls.train.x.cpu().numpy(), dls.valid.x.cpu().numpy()
        return cls.from_pairs(
            np.concatenate([train_x, valid_x]), train_x, dls.train.y.cpu().numpy(), len(dls.users), len(dls.items)
        )

    def seen_pairs(self, user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(k, item_row)`` for every item rated by ``user_rows[k]``, without a Python loop."""
        indptr, entries = gather_rows(self.indptr, user_rows)
        return entry_rows(indptr), self.indices[entries]

    def pair_codes(self) -> np.ndarray:
        """Every stored pair as one number, ``user_row * n_items + item_row`` (for set tests between pair lists)."""
        return entry_rows(self.indptr) * len(self.item_counts) + self.indices

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """For safetensors: the arrays as tensors (the mean goes in the JSON config)."""
        return {
            "indptr": torch.from_numpy(self.indptr.astype(np.int64)),
            "indices": torch.from_numpy(self.indices.astype(np.int64)),
            "user_trained": torch.from_numpy(self.user_trained.astype(np.uint8)),
            "item_counts": torch.from_numpy(self.item_counts.astype(np.int64)),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], global_mean: float) -> RatingHistory:
        """The inverse of :meth:`to_tensors` (files that also hold the derivable ``item_trained`` load too)."""
        return cls(
            tensors["indptr"].numpy().astype(np.int64),
            tensors["indices"].numpy().astype(np.int64),
            tensors["user_trained"].numpy().astype(bool),
            tensors["item_counts"].numpy().astype(np.int64),
            float(global_mean),
        )
