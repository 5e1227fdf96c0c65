"""Honest evaluation: rating and ranking metrics on a held-out table, and k-fold cross-validation.

Protocol of :func:`evaluate` (also returned in ``result.attrs["protocol"]``):

* **Rating metrics** (RMSE, MAE) over every test rating. Test users or items
  the model never trained on are counted (``cold_users``, ``cold_items``,
  ``fallback_rows``) and predicted with the documented fallback of
  :meth:`~collabkit.recommend.Recommender.predict`; nothing is dropped.
* **Ranking metrics at k** (precision, recall, NDCG, MAP, hit rate, MRR) over
  the test users with at least one relevant test item, where *relevant* means
  a test rating at or above ``threshold`` (for implicit feedback, every test
  interaction). Each user's candidates are all the items the model trained on
  that the user did not rate in the training table ("all unrated items", never
  sampled negatives); catalogue coverage is the share of trained items that
  appear in some top-k list. The lists come from the ranking model when the
  model has one (``rank_by``), and the same metrics of the most-popular chart
  of the training table stand beside them in the ``popularity`` column, so the
  lift is in plain sight.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from collabkit.data.history import RatingHistory, entry_rows
from collabkit.data.interactions import Interactions
from collabkit.data.ratings import Duplicates, validate_ratings
from collabkit.data.splits import kfold
from collabkit.errors import ConfigError, DataError
from collabkit.metrics import coverage, mae, ranking_metrics, rmse
from collabkit.models.popular import Popularity
from collabkit.recommend import Recommender
from collabkit.training.recipe import TrainConfig, train

PROTOCOL = (
    "rating metrics over all test ratings (cold users/items predicted by fallback and counted); "
    "ranking metrics at k over test users with a relevant item ({relevant}), ranked by {rank_by}, "
    "candidates: all trained items the user did not rate in training; popularity: the most-rated training items"
)


def evaluate(
    rec: Recommender,
    train_frame: pd.DataFrame | None,
    test_frame: pd.DataFrame,
    k: int = 10,
    threshold: float = 4.0,
    rank_by: str | None = None,
    allow_overlap: bool = False,
) -> pd.DataFrame:
    """Metrics of ``rec`` on ``test_frame``; ``train_frame`` is what it was trained on (for exclusion;
    ``None``: the model's own training pairs, for a test file kept apart from a model trained on everything).

    Both frames have user, item and rating (or, for implicit feedback, weight) as their
    first three columns. ``rank_by`` chooses the model behind the top-k lists (see
    :meth:`~collabkit.recommend.Recommender.recommend`).

    Raises:
        DataError: some test pairs are pairs the model trained on (another split or seed than
            training's), unless ``allow_overlap``; models saved before the ranking models did not
            keep their training pairs and are not checked.

    Returns:
        A tidy DataFrame ``metric, value, popularity`` (the most-popular chart's value of each
        ranking metric); ``attrs["protocol"]`` states the protocol.
    """
    if k < 1:
        raise ConfigError(f"k must be a positive integer, got {k}")
    rank_by = rec.check_rank_by(rank_by)
    test_frame = validate_ratings(test_frame, duplicates="keep", min_ids=1)
    if train_frame is None:  # a separate test file: what the model saw is its own training pairs
        if rec.interactions is None:
            raise DataError("this model was saved without its training pairs: pass the training table too")
        inter, history = rec.interactions, None
        pairs = np.stack([inter.row_users(), inter.indices], axis=1)  # already the model's rows
        seen = RatingHistory.from_pairs(pairs, pairs, inter.values - np.float32(inter.offset), len(rec.users),
                                        len(rec.items))
    else:
        train_frame = validate_ratings(train_frame, duplicates="keep")
        history = seen = _training_history(rec, train_frame)
    users, items = test_frame.iloc[:, 0].to_numpy(), test_frame.iloc[:, 1].to_numpy()
    truth = test_frame.iloc[:, 2].to_numpy(dtype=np.float64)
    u_rows = rec.users.index(rec.users.parse(users))
    i_rows = rec.items.index(rec.items.parse(items))
    u_known = (u_rows >= 0) & rec.user_trained[np.maximum(u_rows, 0)]
    i_known = (i_rows >= 0) & rec.item_trained[np.maximum(i_rows, 0)]
    if not allow_overlap and rec.interactions is not None:
        remedy = ("evaluate on the split it was trained with (the default replays it)" if history is not None
                  else "this file holds ratings the model trained on; keep the test file apart from training")
        _refuse_overlap(rec, u_rows, i_rows, history, remedy)
    values: dict[str, float] = {}
    if rec.predicts_ratings:
        preds, _ = rec.predict_values(users, items)
        values.update({"rmse": rmse(preds, truth), "mae": mae(preds, truth)})
    values.update({
        "test_ratings": float(len(truth)),
        "cold_users": float(len(set(np.asarray(users, dtype=object)[~u_known]))),
        "cold_items": float(len(set(np.asarray(items, dtype=object)[~i_known]))),
        "fallback_rows": float((~u_known | ~i_known).sum()),
    })
    baseline: dict[str, float] = {}
    liked = truth >= threshold if rec.predicts_ratings else np.ones(len(truth), dtype=bool)
    relevant = np.flatnonzero(liked & u_known & i_known)
    if len(relevant):
        scored_users, user_index = np.unique(u_rows[relevant], return_inverse=True)
        exclusion = seen
        popular = _popularity(rec, exclusion)
        for target, model, how in ((values, rec, rank_by), (baseline, popular, "ranking")):
            scores, top = model.top_n(scored_users, n=k, exclude=exclusion, rank_by=how)
            top = np.where(np.isfinite(scores), top, -1)
            ranking = ranking_metrics(top, user_index, i_rows[relevant], k)
            target.update({f"{name}@{k}": value for name, value in ranking.items() if name != "users"})
            target["ranked_users"] = ranking["users"]
            target[f"coverage@{k}"] = coverage(top, int(rec.item_trained.sum()))
    result = pd.DataFrame({
        "metric": list(values), "value": list(values.values()),
        "popularity": [baseline.get(name, np.nan) for name in values],
    })
    what = f"test rating >= {threshold}" if rec.predicts_ratings else "every test interaction"
    result.attrs["protocol"] = PROTOCOL.format(relevant=what, rank_by=_ranked_by(rec, rank_by))
    return result


def _refuse_overlap(
    rec: Recommender, u_rows: np.ndarray, i_rows: np.ndarray, train: RatingHistory | None, remedy: str
) -> None:
    """Raise when test pairs are pairs the model trained on that ``train`` (the evaluation's training part;
    ``None`` for a separate test file) does not hold: another split or seed than the model's, whose figures
    would flatter it. (A pair in both parts of the same split is a repeated event, e.g. two plays, and is
    excluded as seen anyway.)"""
    known = (u_rows >= 0) & (i_rows >= 0)
    n_items = len(rec.items)
    codes = u_rows[known] * n_items + i_rows[known]
    trained = rec.interactions.row_users() * n_items + rec.interactions.indices
    overlap = np.isin(codes, trained)
    if train is not None:
        overlap &= ~np.isin(codes, train.pair_codes())
    overlap = int(overlap.sum())
    if overlap:
        raise DataError(
            f"{overlap:,} of the {len(u_rows):,} test ratings are pairs this model trained on, so its figures "
            f"would flatter it: {remedy}, or pass --allow-overlap (allow_overlap=True) to score them anyway"
        )


def _ranked_by(rec: Recommender, rank_by: str) -> str:
    return f"the {rec.ranker.name} ranking model" if rank_by == "ranking" else "predicted rating"


def _popularity(rec: Recommender, history: RatingHistory) -> Recommender:
    """The most-popular chart of ``history``'s training pairs, in ``rec``'s rows, as a Recommender."""
    interactions = Interactions.from_rows(entry_rows(history.indptr), history.indices, None, len(rec.users),
                                          len(rec.items))
    chart = Popularity().fit(interactions)
    return Recommender(None, rec.users, rec.items, rec.columns, None, None, rec.history, chart, interactions)


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
    ranker: str | None = "auto",
    rank_by: str | None = None,
) -> pd.DataFrame:
    """Train and evaluate ``config`` on each of ``folds`` random folds of ``frame``.

    ``duplicates`` says what to do with repeated (user, item) pairs, as in
    :func:`~collabkit.data.validate_ratings`; it is applied once, to the whole table.
    ``ranker`` names the ranking model fitted beside the rating model (``None``: none);
    ``rank_by`` is :func:`evaluate`'s.

    Returns:
        One row per fold: ``fold``, every metric of :func:`evaluate`, and
        ``fit_seconds``. Summarise with :func:`summarise`.
    """
    if config.patience is not None:
        raise ConfigError("early stopping would choose each fold's epoch on its test fold, and the figures would "
                         "flatter; cross-validate without it (patience=None, no --early-stop)")
    clean = validate_ratings(frame, *columns, duplicates=duplicates)
    rows = []
    for fold, (train_idx, test_idx) in enumerate(kfold(len(clean), folds, seed)):
        train_part, test_part = clean.iloc[train_idx], clean.iloc[test_idx]
        started = time.perf_counter()
        learn = train(config, train_part, test_part, duplicates=duplicates)
        rec = Recommender.from_learner(learn)
        if ranker is not None:
            rec.fit_ranker(ranker)
        fit_seconds = time.perf_counter() - started
        metrics = evaluate(rec, train_part, test_part, k=k, threshold=threshold, rank_by=rank_by)
        popular = {f"popularity {m}": v for m, v in zip(metrics["metric"], metrics["popularity"]) if not np.isnan(v)}
        rows.append({"fold": fold, **dict(zip(metrics["metric"], metrics["value"])), **popular,
                     "fit_seconds": fit_seconds})
    out = pd.DataFrame(rows)
    out.attrs["protocol"] = metrics.attrs["protocol"]
    return out


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of every metric over the folds."""
    numeric = per_fold.drop(columns=["fold"])
    return pd.DataFrame({"metric": numeric.columns, "mean": numeric.mean().to_numpy(), "std": numeric.std().to_numpy()})
