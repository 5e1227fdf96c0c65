"""Rating metrics on plain arrays or tensors.

Each metric takes ``(preds, targs)`` of the same length, flattens both and
returns a float. They are computed over the whole validation set at once, never
averaged over batches.
"""

from __future__ import annotations

import numpy as np
import torch

from collabkit.errors import ConfigError

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(values: ArrayLike) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().reshape(-1).double()
    return torch.from_numpy(np.array(values, dtype=np.float64).reshape(-1))


def _flat_pair(preds: ArrayLike, targs: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    p = _as_tensor(preds)
    t = _as_tensor(targs).to(p.device)
    if p.shape != t.shape:
        raise ConfigError(f"preds and targs must have the same number of values, got {p.numel()} and {t.numel()}")
    if p.numel() == 0:
        raise ConfigError("cannot compute a metric on zero predictions")
    return p, t


def mse(preds: ArrayLike, targs: ArrayLike) -> float:
    """Mean squared error."""
    p, t = _flat_pair(preds, targs)
    return float(((p - t) ** 2).mean())


def rmse(preds: ArrayLike, targs: ArrayLike) -> float:
    """Root mean squared error: ``sqrt(mean((p - t)²))``."""
    return mse(preds, targs) ** 0.5


def mae(preds: ArrayLike, targs: ArrayLike) -> float:
    """Mean absolute error: ``mean(|p - t|)``."""
    p, t = _flat_pair(preds, targs)
    return float((p - t).abs().mean())


def ranking_metrics(
    top: np.ndarray, relevant_users: np.ndarray, relevant_items: np.ndarray, k: int | None = None
) -> dict[str, float]:
    """Top-k ranking quality, averaged over the users that have at least one relevant item.

    Args:
        top: ``(n_users, k)`` item rows recommended to each user, best first;
            ``-1`` pads a short list.
        relevant_users, relevant_items: the relevant ``(user, item)`` pairs;
            user ``u`` is row ``u`` of ``top``.
        k: cut-off (default: ``top.shape[1]``).

    Returns:
        ``precision``: hits / k. ``recall``: hits / relevant. ``ndcg``: DCG of
        the hits (gain 1, discount ``1/log2(rank+1)``) over the ideal DCG.
        ``map``: average precision at the ranks of the hits, over
        ``min(relevant, k)``. ``hit_rate``: share of users with a hit. ``mrr``:
        mean of 1/rank of the first hit (0 without one). Also ``users``: how
        many users were scored. Computed for all users at once, without a loop.
    """
    top = np.asarray(top, dtype=np.int64)
    k = top.shape[1] if k is None else int(k)
    if k < 1 or k > top.shape[1]:
        raise ConfigError(f"k must be between 1 and {top.shape[1]}, got {k}")
    top = top[:, :k]
    n_users = top.shape[0]
    width = int(max(top.max(initial=0), np.max(relevant_items, initial=0))) + 1
    relevant_users = np.asarray(relevant_users, dtype=np.int64)
    n_relevant = np.bincount(relevant_users, minlength=n_users)[:n_users]
    codes = relevant_users * width + np.asarray(relevant_items, dtype=np.int64)
    hits = (top >= 0) & np.isin(np.arange(n_users)[:, None] * width + top, codes)
    scored = n_relevant > 0
    if not scored.any():
        raise ConfigError("no user has a relevant item: lower the relevance threshold or check the test set")
    hits, n_rel = hits[scored], n_relevant[scored]
    ranks = np.arange(1, k + 1)
    discount = 1.0 / np.log2(ranks + 1)
    dcg = (hits * discount).sum(1)
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    cum_hits = np.cumsum(hits, axis=1)
    average_precision = (hits * cum_hits / ranks).sum(1) / np.minimum(n_rel, k)
    first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
    return {
        "precision": float((hits.sum(1) / k).mean()),
        "recall": float((hits.sum(1) / n_rel).mean()),
        "ndcg": float((dcg / ideal).mean()),
        "map": float(average_precision.mean()),
        "hit_rate": float(hits.any(1).mean()),
        "mrr": float(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0).mean()),
        "users": float(scored.sum()),
    }


def coverage(top: np.ndarray, n_items: int) -> float:
    """Share of the catalogue (``n_items``) that appears in at least one list of ``top``."""
    shown = np.unique(np.asarray(top)[np.asarray(top) >= 0])
    return float(len(shown) / n_items) if n_items else 0.0
