"""Honest evaluation: rating and ranking metrics on a held-out table, and k-fold cross-validation.

Protocol of :func:`evaluate` (also returned in ``result.attrs["protocol"]``):

* **Rating metrics** (RMSE, MAE) over every test rating. Test users or items
  the model never trained on are counted (``cold_users``, ``cold_items``,
  ``fallback_rows``) and predicted with the documented fallback of
  :meth:`~collabkit.recommend.Recommender.predict`; nothing is dropped.
* **Ranking metrics at k** (precision, recall, NDCG, MAP, hit rate, MRR) over
  the test users with at least one relevant test item, where *relevant* means
  a test rating at or above ``threshold``. Each user's candidates are all the
  items the model trained on that the user did not rate in the training table
  ("all unrated items"); catalogue coverage is the share of trained items that
  appear in some top-k list.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from collabkit.data.history import RatingHistory
from collabkit.data.ratings import Duplicates, validate_ratings
from collabkit.data.splits import kfold
from collabkit.metrics import coverage, mae, ranking_metrics, rmse
from collabkit.recommend import Recommender
from collabkit.training.recipe import TrainConfig, train

PROTOCOL = (
    "rating metrics over all test ratings (cold users/items predicted by fallback and counted); "
    "ranking metrics at k over test users with a relevant item (test rating >= {threshold}), "
    "candidates: all trained items the user did not rate in training"
)


def evaluate(
    rec: Recommender,
    train_frame: pd.DataFrame,
    test_frame: pd.DataFrame,
    k: int = 10,
    threshold: float = 4.0,
) -> pd.DataFrame:
    """Metrics of ``rec`` on ``test_frame``; ``train_frame`` is what it was trained on (for exclusion).

    Both frames have user, item and rating as their first three columns.

    Returns:
        A tidy DataFrame ``metric, value``; ``attrs["protocol"]`` states the protocol.
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    train_frame = validate_ratings(train_frame, duplicates="keep")
    test_frame = validate_ratings(test_frame, duplicates="keep", min_ids=1)
    users, items = test_frame.iloc[:, 0].to_numpy(), test_frame.iloc[:, 1].to_numpy()
    preds, fallback = rec.predict_values(users, items)
    truth = test_frame.iloc[:, 2].to_numpy(dtype=np.float64)
    # the fallback column already says which side the model never trained on
    u_known = ~np.isin(fallback, ("user", "user+item"))
    i_known = ~np.isin(fallback, ("item", "user+item"))
    values: dict[str, float] = {
        "rmse": rmse(preds, truth),
        "mae": mae(preds, truth),
        "test_ratings": float(len(truth)),
        "cold_users": float(len(set(np.asarray(users, dtype=object)[~u_known]))),
        "cold_items": float(len(set(np.asarray(items, dtype=object)[~i_known]))),
        "fallback_rows": float((fallback != "").sum()),
    }

    relevant = np.flatnonzero((truth >= threshold) & u_known & i_known)
    if len(relevant):
        u_rows = rec.users.index(rec.users.parse(users[relevant]))
        i_rows = rec.items.index(rec.items.parse(items[relevant]))
        scored_users, user_index = np.unique(u_rows, return_inverse=True)
        exclusion = _training_history(rec, train_frame)
        scores, top = rec.top_n(scored_users, n=k, exclude=exclusion)
        top = np.where(np.isfinite(scores), top, -1)
        ranking = ranking_metrics(top, user_index, i_rows, k)
        values.update({f"{name}@{k}": value for name, value in ranking.items() if name != "users"})
        values["ranked_users"] = ranking["users"]
        values[f"coverage@{k}"] = coverage(top, int(rec.item_trained.sum()))
    result = pd.DataFrame({"metric": list(values), "value": list(values.values())})
    result.attrs["protocol"] = PROTOCOL.format(threshold=threshold)
    return result


def _training_history(rec: Recommender, train_frame: pd.DataFrame) -> RatingHistory:
    """The training table's (user, item) pairs in the model's rows, for ``exclude``."""
    u = rec.users.index(rec.users.parse(train_frame.iloc[:, 0].to_numpy()))
    i = rec.items.index(rec.items.parse(train_frame.iloc[:, 1].to_numpy()))
    ok = (u >= 0) & (i >= 0)
    pairs = np.stack([u[ok], i[ok]], axis=1)
    return RatingHistory.from_pairs(pairs, pairs, train_frame.iloc[:, 2].to_numpy()[ok], len(rec.users), len(rec.items))


def cross_validate(
    config: TrainConfig,
    frame: pd.DataFrame,
    folds: int = 5,
    seed: int = 0,
    k: int = 10,
    threshold: float = 4.0,
    columns: Sequence[str | None] = (None, None, None),
    duplicates: Duplicates = "error",
) -> pd.DataFrame:
    """Train and evaluate ``config`` on each of ``folds`` random folds of ``frame``.

    ``duplicates`` says what to do with repeated (user, item) pairs, as in
    :func:`~collabkit.data.validate_ratings`; it is applied once, to the whole table.

    Returns:
        One row per fold: ``fold``, every metric of :func:`evaluate`, and
        ``fit_seconds``. Summarise with :func:`summarise`.
    """
    clean = validate_ratings(frame, *columns, duplicates=duplicates)
    rows = []
    for fold, (train_idx, test_idx) in enumerate(kfold(len(clean), folds, seed)):
        train_part, test_part = clean.iloc[train_idx], clean.iloc[test_idx]
        started = time.perf_counter()
        learn = train(config, train_part, test_part, duplicates=duplicates)
        fit_seconds = time.perf_counter() - started
        metrics = evaluate(Recommender.from_learner(learn), train_part, test_part, k=k, threshold=threshold)
        rows.append({"fold": fold, **dict(zip(metrics["metric"], metrics["value"])), "fit_seconds": fit_seconds})
    out = pd.DataFrame(rows)
    out.attrs["protocol"] = PROTOCOL.format(threshold=threshold)
    return out


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of every metric over the folds."""
    numeric = per_fold.drop(columns=["fold"])
    return pd.DataFrame({"metric": numeric.columns, "mean": numeric.mean().to_numpy(), "std": numeric.std().to_numpy()})
