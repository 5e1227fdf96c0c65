"""EASE: an item-item model with a closed-form solution (Steck, "Embarrassingly Shallow Autoencoders", 2019).

With ``X`` the users × items interaction matrix, EASE finds the item-item
weights ``B`` that best rebuild ``X`` from itself, an item never explaining
itself::

    B = argmin ||X - X B||² + λ ||B||²   subject to diag(B) = 0
      = I - P · diag(1 / diag(P)),       P = (XᵀX + λI)⁻¹

    score(u, j) = Σ_i x_ui B_ij

Items left out of ``B`` (below ``min_count``) score ``-inf``: the model knows
nothing about them. Among the modelled items, a millionth of each item's
popularity (its share of the most popular item's users) is added, so ties (a
user whose items are all left out scores 0 everywhere) go to popular items; it
can also reorder scores closer than a millionth, and vanishes in float32
rounding next to large scores.

A user's scores come from their row of ``X`` alone, so a new user is scored
exactly like a trained one (fold-in is a vector-matrix product), and ``B``'s
row ``i`` says which items a liking for ``i`` raises: the similar items.

Cost: ``P`` is a dense items × items inverse, so memory grows with items² and
time with items³ (all 9,373 trained items of ml-latest-small take 32 s on one core). Items with fewer
than ``min_count`` users are left out of ``B`` (they score 0); past
``max_items`` modelled items, :meth:`EASE.fit` refuses and names implicit ALS,
whose cost grows with the interactions instead.

``l2`` is λ in units of the mean squared interaction value, so on 0/1 data it
is the paper's λ, and rating-valued data (values 1–5) get the same strength.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from collabkit.data.interactions import Interactions
from collabkit.errors import ConfigError, DataError, ModelFileError
from collabkit.models.ranker import Ranker

log = logging.getLogger(__name__)

TIE_BREAK = 1e-6
"""Weight of an item's popularity share in its score: it decides ties (and differences below it)."""


class EASE(Ranker):
    """Item-item weights in closed form; see the module docstring for the formula.

    Args:
        l2: λ relative to the mean squared interaction value. The default, 200, is the validation
            choice on ml-latest-small and within 0.002 NDCG@10 of u1's (300), on validation splits carved
            from the training data (``bench/ranking.py --tune``).
        min_count: items with fewer interacting users than this are not modelled (they score 0). At 5,
            validation NDCG@10 on ml-latest-small equals that of modelling every item, and the fit takes
            2 s instead of 32 s.
        max_items: refuse to model more items than this (memory items², time items³).
    """

    name = "ease"
    item_similarity = True

    def __init__(self, l2: float = 200.0, min_count: int = 5, max_items: int = 12_000) -> None:
        if not (l2 > 0 and min_count >= 1 and max_items >= 1):
            raise ConfigError(f"EASE needs l2 > 0, min_count >= 1 and max_items >= 1, got {l2}, {min_count}, {max_items}")
        self.l2, self.min_count, self.max_items = float(l2), int(min_count), int(max_items)
        self.items: torch.Tensor | None = None  # (m,) the modelled item rows
        self.weight: torch.Tensor | None = None  # (m, m) B
        self.prior: torch.Tensor | None = None  # (m,) the tie-breaker: 1e-6 x popularity share

    def config(self) -> dict:
        return {"l2": self.l2, "min_count": self.min_count, "max_items": self.max_items}

    def fit(self, interactions: Interactions) -> EASE:
        item_counts = interactions.item_counts  # (a bincount: counted once)
        modelled = np.flatnonzero(item_counts >= self.min_count)
        m = len(modelled)
        if m > self.max_items:
            raise DataError(
                f"EASE would model {m:,} items: that needs {m * m * 4 / 2**30:.1f} GiB and an items³ solve; "
                f"use the ials ranker for a catalogue this large (or raise EASE's min_count / max_items)"
            )
        if m == 0:
            raise DataError(f"no item has {self.min_count} or more interacting users: EASE has nothing to model")
        log.info("EASE: solving for %d x %d item weights (%d items below min_count %d left out)",
                 m, m, interactions.n_items - m, self.min_count)
        self._set_items(torch.from_numpy(modelled), interactions.n_items)
        x = interactions.csr(m, self.columns)
        with warnings.catch_warnings():  # torch calls its sparse support "beta"; this one product is all we use
            warnings.simplefilter("ignore", UserWarning)
            gram = (x.to_sparse_coo().t() @ x.to_dense()) if interactions.n_users * m <= 1 << 26 else \
                torch.sparse.mm(x.to_sparse_coo().t().coalesce(), x.to_sparse_coo()).to_dense()
        lam = self.l2 * float((x.values().double() ** 2).mean())
        gram.diagonal().add_(lam)
        precision = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        weight = precision / (-precision.diagonal())
        weight.diagonal().zero_()
        self.weight = weight.contiguous()
        counts = item_counts[modelled].astype(np.float32)
        self.prior = torch.from_numpy(TIE_BREAK * counts / counts.max())
        return self

    def _set_items(self, items: torch.Tensor, n_items: int) -> None:
        """The modelled item rows, and ``columns``: each item's column of ``weight`` (-1 for one left out),
        computed once here rather than for every block of users scored."""
        self.items, self.n_items = items, n_items
        self.columns = np.full(n_items, -1, dtype=np.int64)
        self.columns[items.numpy()] = np.arange(len(items))

    def _tables(self) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(n_items, items, weight, prior)`` of a fitted model (:class:`NotFittedError` before fit)."""
        n_items = self._fitted()
        assert self.items is not None and self.weight is not None and self.prior is not None  # (set with n_items)
        return n_items, self.items, self.weight, self.prior

    def score(self, users: Interactions, user_rows: np.ndarray) -> torch.Tensor:
        n_items, items, weight, prior = self._tables()
        out = torch.full((users.n_users, n_items), -torch.inf)
        out[:, items] = users.csr(len(items), self.columns) @ weight + prior
        return out

    def similar_to(self, row: int) -> torch.Tensor:
        """Row ``row`` of B (``-inf`` everywhere when the item was left out: nothing is known of it)."""
        n_items, items, weight, _ = self._tables()
        out = torch.full((n_items,), -torch.inf)
        column = int(self.columns[row])  # the item's column of B, -1 when it was left out
        if column >= 0:
            out[items] = weight[column]
        return out

    def state(self) -> dict[str, torch.Tensor]:
        _, items, weight, prior = self._tables()
        return {"items": items, "weight": weight, "prior": prior}

    def load_state(self, tensors: dict[str, torch.Tensor], n_users: int, n_items: int) -> None:
        m = int(tensors["items"].shape[0]) if "items" in tensors else 0
        tensors = {"prior": torch.zeros(m), **tensors}  # (files from before the tie-breaker have none)
        self._expect(tensors, {"items": (m,), "weight": (m, m), "prior": (m,)})
        items = tensors["items"].to(torch.int64)
        if m and (items.min() < 0 or items.max() >= n_items):
            raise ModelFileError(f"EASE's item rows run past the {n_items} items of vocab.json")
        self._set_items(items, n_items)
        self.weight = tensors["weight"].float()
        self.prior = tensors["prior"].float()
