"""Ask a fitted model questions in raw ids: ratings, top-N, similar items and users, new users.

A :class:`Recommender` is a trained model plus what gives its rows meaning: the
user and item vocabularies, item titles, and the rating history (who rated
what, which rows were trained). Every question is answered for many users at
once, with matrix products and ``topk``; nothing loops over users in Python.

The model is seen through :class:`FactorView`: a vector per user, a vector per
item, and how a pair of vectors becomes a rating. For ``DotProductBias`` the
vectors are augmented so that one product carries the biases too::

    user u -> [p_u, b_u, 1]      item i -> [q_i, 1, b_i]
    [p_u, b_u, 1] · [q_i, 1, b_i] = p_u · q_i + b_u + b_i

Two models can stand behind one Recommender: the *rating model* (what a user
would give an item they rate; :meth:`Recommender.predict`) and the *ranking
model* (which items a user picks; a :class:`~collabkit.models.ranker.Ranker`
such as EASE or implicit ALS). Top-N lists, similar items and new users are
ranked by the ranking model when there is one (``rank_by="ranking"``, the
default) and by predicted rating otherwise or when asked (``rank_by="rating"``,
the lesson's way). A model trained on implicit feedback has only the ranker
and refuses to predict ratings.

Unknown ids (the policy of :meth:`Recommender.predict`):
    An id the model never trained on (absent, or present only in the
    validation split) is replaced by the *average trained user* (or item): the
    mean of the trained vectors, biases included. So a new user's prediction
    for a known item is that item's bias plus the average user's, and a new
    item's prediction for a known user is that user's bias plus the average
    item's. When both sides are unknown the prediction is the mean training
    rating. ``strict=True`` raises :class:`~collabkit.errors.UnknownIdError`
    instead, naming the ids.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from collabkit.data.catalogue import Catalogue
from collabkit.data.history import RatingHistory
from collabkit.data.interactions import Interactions
from collabkit.data.ratings import validate_ratings
from collabkit.data.vocab import UNKNOWN, Vocabulary
from collabkit.errors import ConfigError, DataError, NotFittedError
from collabkit.io import load_model, save_model
from collabkit.models.ease import EASE
from collabkit.models.factors import PAIRS_PER_CHUNK, FactorView
from collabkit.models.ranker import Ranker
from collabkit.models.registry import ranker as make_ranker
from collabkit.training.losses import MSELossFlat

RANK_BY = ("ranking", "rating")

log = logging.getLogger(__name__)

def factor_view(model: torch.nn.Module) -> FactorView:
    """The :class:`~collabkit.models.factors.FactorView` of a rating model (its ``factor_view()``)."""
    if not callable(getattr(model, "factor_view", None)):
        raise TypeError(f"a Recommender needs a rating model with factor_view() (DotProduct, DotProductBias, "
                        f"EmbeddingNN, ...), got {type(model).__name__}")
    with torch.no_grad():
        return model.factor_view()


@dataclass
class NewUser:
    """A user folded into a trained model from a few ratings."""

    vector: torch.Tensor  # the fitted user vector, in FactorView form
    item_rows: np.ndarray  # rows of the items they rated
    ratings: np.ndarray


def _ranker(ranker: str | Ranker, config: dict, interactions: Interactions) -> Ranker:
    """An unfitted ranker: as named or given; ``"auto"`` is EASE when its item matrix fits, else implicit ALS,
    and popularity when no item has enough users for EASE (data too small to learn item-item weights)."""
    if ranker == "auto":
        try:
            ease = EASE(**config)
        except TypeError as exc:
            raise ConfigError(
                f"with ranker='auto' the hyperparameters are EASE's; name the ranker for others ({exc})"
            ) from exc
        eligible = int((interactions.item_counts >= ease.min_count).sum())
        if eligible == 0:
            log.warning("no item has %d or more users, so EASE has nothing to model: ranking by popularity",
                        ease.min_count)
            return make_ranker("popular")
        if eligible <= ease.max_items:
            return ease
        log.info("EASE would model too many items (max_items %d): ranking with implicit ALS instead", ease.max_items)
        return make_ranker("ials")
    return make_ranker(ranker, **config) if isinstance(ranker, str) else ranker


def _sequence(values: Iterable[Any]) -> Sequence[Any]:
    """``values`` as something with a length and positions: arrays as they are, Series as arrays, else a list."""
    if isinstance(values, pd.Series):
        return values.to_numpy()
    return values if isinstance(values, np.ndarray) else list(values)


class Recommender:
    """A trained model together with the vocabularies and history that give its rows meaning.

    Build one from a fitted learner (:meth:`from_learner`, then :meth:`fit_ranker`
    for ranking), from implicit feedback (:meth:`from_interactions`) or from a
    saved model directory (:meth:`load`).

    Args:
        model: the rating model, a ``DotProduct``, ``DotProductBias`` or ``EmbeddingNN``;
            ``None`` for implicit feedback (then ``ranker`` is required).
        users, items: the vocabularies of the model's rows.
        columns: ``{"user": ..., "item": ..., "rating": ...}`` column names.
        titles: optional title per item row.
        info: metadata kept with a saved model.
        history: who rated what; needed for ``exclude_seen`` and to know which
            rows were trained.
        ranker: a fitted ranking model, which ranks top-N lists, similar items and new users.
        interactions: the training interactions the ranker scores users from (given with ``ranker``,
            or kept by :meth:`from_learner` for :meth:`fit_ranker`).
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        users: Vocabulary,
        items: Vocabulary,
        columns: dict[str, str] | None = None,
        titles: Sequence[str | None] | None = None,
        info: dict[str, Any] | None = None,
        history: RatingHistory | None = None,
        ranker: Ranker | None = None,
        interactions: Interactions | None = None,
    ) -> None:
        if model is None and ranker is None:
            raise ConfigError("a Recommender needs a rating model, a ranker, or both")
        if ranker is not None and interactions is None:
            raise ConfigError("a ranker needs the interactions it scores users from")
        self.model = model.eval() if model is not None else None
        self.catalogue = Catalogue(users, items, titles, history)
        self.columns = columns or {"user": users.name, "item": items.name, "rating": "rating"}
        self.info = info or {}
        self.ranker, self.interactions = ranker, interactions

    @property
    def predicts_ratings(self) -> bool:
        """Whether there is a rating model (implicit-feedback models only rank)."""
        return self.model is not None

    def check_rank_by(self, rank_by: str | None) -> str:
        """``rank_by`` checked against the models at hand; ``None``: the ranker when there is one."""
        if rank_by is None:
            return "ranking" if self.ranker is not None else "rating"
        if rank_by not in RANK_BY:
            raise ConfigError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
        if rank_by == "ranking" and self.ranker is None:
            raise DataError("this model has no ranking model: retrain it (collabkit train fits one) or rank by rating")
        if rank_by == "rating":
            self._rating_model()
        return rank_by

    def _rating_model(self) -> torch.nn.Module:
        if self.model is None:
            raise DataError(
                "this model was trained on implicit feedback (no ratings): it ranks items but cannot predict "
                "ratings; use recommend or similar"
            )
        return self.model

    # --- construction and persistence -------------------------------------------------
    @classmethod
    def from_learner(cls, learn, titles: Mapping | None = None, info: dict[str, Any] | None = None) -> Recommender:
        """Wrap a fitted :class:`~collabkit.training.Learner`; ``titles`` maps raw item id -> title
        (items of a column named ``title`` are their own titles)."""
        if not learn.recorder.values:
            raise NotFittedError("the learner has not been trained: call fit or fit_one_cycle first")
        dls = learn.dls
        columns = {"user": dls.user_name, "item": dls.item_name, "rating": dls.rating_name}
        if titles is not None:
            row_titles = [titles.get(i) for i in dls.items]
        else:  # items keyed by title (the lesson's item_name='title') are their own titles
            row_titles = [str(i) for i in dls.items] if dls.item_name == "title" else None
        info = dict(info or {})
        if isinstance(learn.loss_func, MSELossFlat):
            info.setdefault("train_mse", float(learn.recorder.values[-1][0]))
        if dls.train.n:  # predictions are clipped to it and fold-in ratings checked against it
            info.setdefault("rating_scale", [float(dls.train.y.min()), float(dls.train.y.max())])
        train_x = dls.train.x.cpu().numpy()
        interactions = Interactions.from_ratings(
            train_x[:, 0], train_x[:, 1], dls.train.y.cpu().numpy(), len(dls.users), len(dls.items)
        )
        rec = cls(learn.model, dls.users, dls.items, columns, row_titles, info, RatingHistory.from_dls(dls))
        rec.interactions = interactions
        return rec

    @classmethod
    def from_interactions(
        cls,
        frame: pd.DataFrame,
        user_col: str | None = None,
        item_col: str | None = None,
        weight_col: str | None = None,
        titles: Mapping | None = None,
        ranker: str | Ranker = "auto",
        info: dict[str, Any] | None = None,
        **ranker_config,
    ) -> Recommender:
        """A ranking-only model of implicit feedback: who played, clicked or bought what.

        Args:
            frame: one row per interaction; repeated (user, item) pairs add up.
            user_col, item_col: default: the first two columns.
            weight_col: optional count or weight column (positive numbers); default: each row counts 1.
            titles: raw item id -> title.
            ranker, ranker_config: see :meth:`fit_ranker`.
        """
        table = frame.copy()
        columns = list(table.columns)
        user_col = user_col or (columns[0] if columns else None)
        item_col = item_col or (columns[1] if len(columns) > 1 else None)
        weight = "__weight__"
        if weight_col is None:
            table[weight] = np.float32(1.0)
            weight_col = weight
        clean = validate_ratings(table, user_col, item_col, weight_col, duplicates="keep")
        values = clean.iloc[:, 2].to_numpy(dtype=np.float32)
        if (values <= 0).any():
            raise DataError(f"the weight column {weight_col!r} must hold positive counts or weights; found {values.min()}")
        users = Vocabulary.from_values(clean.iloc[:, 0], name=str(clean.columns[0]))
        items = Vocabulary.from_values(clean.iloc[:, 1], name=str(clean.columns[1]))
        u, i = users.index_strict(clean.iloc[:, 0]), items.index_strict(clean.iloc[:, 1])
        pairs = np.stack([u, i], axis=1)
        history = RatingHistory.from_pairs(pairs, pairs, values, len(users), len(items))
        interactions = Interactions.from_rows(u, i, values, len(users), len(items))
        row_titles = [titles.get(x) for x in items] if titles is not None else None
        columns_out = {"user": users.name, "item": items.name, "rating": "" if weight_col == weight else weight_col}
        info = {"feedback": "implicit", **(info or {})}
        fitted = _ranker(ranker, ranker_config, interactions).fit(interactions)
        return cls(None, users, items, columns_out, row_titles, info, history, fitted, interactions)

    def fit_ranker(self, ranker: str | Ranker = "auto", **config) -> Recommender:
        """Fit a ranking model on this model's training interactions and rank with it; returns ``self``.

        Args:
            ranker: a registry name (``"ease"``, ``"ials"``, ``"popular"``), an unfitted
                :class:`~collabkit.models.ranker.Ranker`, or ``"auto"``: EASE when its
                item-item matrix fits (see :class:`~collabkit.models.ease.EASE`), else implicit ALS.
            config: the ranker's hyperparameters (with a name).
        """
        if self.interactions is None:
            raise DataError("this model kept no training interactions to fit a ranker on; retrain it")
        self.ranker = _ranker(ranker, config, self.interactions).fit(self.interactions)
        return self

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model directory written by :meth:`save` (no pickle; see :mod:`collabkit.io`)."""
        m = load_model(path)
        return cls(m.model, m.users, m.items, m.columns, m.titles, m.info, m.history, m.ranker, m.interactions)

    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically; see :func:`collabkit.io.save_model`."""
        return save_model(
            path, self.model, self.users, self.items, self.columns, self.titles, self.info, self.history,
            self.ranker, self.interactions,
        )

    # --- the model as vectors --------------------------------------------------------------
    @functools.cached_property
    def view(self) -> FactorView:
        return factor_view(self._rating_model())

    @functools.cached_property
    def _average_user(self) -> torch.Tensor:
        return self.view.users[torch.from_numpy(self.user_trained)].mean(0)

    @functools.cached_property
    def _average_item(self) -> torch.Tensor:
        return self.view.items[torch.from_numpy(self.item_trained)].mean(0)

    @functools.cached_property
    def _with_averages(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The users' and items' vectors, each with the average vector appended as one more row (the
        stand-in for an id the model did not train on), so a pair's vectors take one gather each."""
        return (torch.cat([self.view.users, self._average_user[None]]),
                torch.cat([self.view.items, self._average_item[None]]))

    @functools.cached_property
    def _user_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and precision of the trained users' free vector entries: the population a new user joins."""
        view = self.view
        free = view.users[torch.from_numpy(self.user_trained)][:, : view.users.shape[1] - view.fixed_tail].double()
        centred = free - free.mean(0)
        cov = centred.T @ centred / max(len(free) - 1, 1)
        cov += torch.eye(len(cov), dtype=cov.dtype) * (1e-3 * cov.diagonal().mean() + 1e-8)
        return free.mean(0).float(), torch.linalg.inv(cov).float()

    # --- the catalogue: ids, titles, what was trained (collabkit.data.catalogue) ------------------
    @property
    def users(self) -> Vocabulary:
        return self.catalogue.users

    @property
    def items(self) -> Vocabulary:
        return self.catalogue.items

    @property
    def titles(self) -> list[str | None] | None:
        return self.catalogue.titles

    @property
    def history(self) -> RatingHistory | None:
        return self.catalogue.history

    @history.setter
    def history(self, history: RatingHistory | None) -> None:
        """A new catalogue (copies never share a change), and every cached view of the trained rows dropped."""
        self.catalogue = Catalogue(self.users, self.items, self.titles, history)
        for name, attr in vars(Recommender).items():
            if isinstance(attr, functools.cached_property) and name != "view":
                self.__dict__.pop(name, None)

    @property
    def user_trained(self) -> np.ndarray:
        return self.catalogue.user_trained

    @property
    def item_trained(self) -> np.ndarray:
        return self.catalogue.item_trained

    @property
    def trained_item_rows(self) -> np.ndarray:
        """The rows of the items the model trained on: the candidates of top-N lists, and what interpret plots."""
        return self.catalogue.trained_item_rows

    def item_row(self, item: Any) -> int:
        """The row of an item given by raw id or by title; a miss suggests the closest titles."""
        return self.catalogue.item_row(item)

    def search_titles(self, query: str, n: int = 10) -> pd.DataFrame:
        """See :meth:`Catalogue.search_titles <collabkit.data.catalogue.Catalogue.search_titles>`."""
        return self.catalogue.search_titles(query, n)

    def title(self, item: Any) -> str | None:
        """The title of a raw item id, or ``None`` when titles are unknown."""
        return self.catalogue.title(item)

    def item_table(self, rows: np.ndarray) -> pd.DataFrame:
        """See :meth:`Catalogue.item_table <collabkit.data.catalogue.Catalogue.item_table>`."""
        return self.catalogue.item_table(rows)

    # --- questions ------------------------------------------------------------------------
    def predict(self, users: Sequence[Any], items: Sequence[Any], strict: bool = False) -> pd.DataFrame:
        """Predicted ratings for each ``(users[k], items[k])`` pair of raw ids (items may be titles).

        Returns:
            A DataFrame ``user, item, prediction, fallback``: ``fallback`` is
            ``""`` for a plain prediction, else ``"user"``, ``"item"`` or
            ``"user+item"``, the side(s) replaced by the average (see the module
            docstring).

        Raises:
            UnknownIdError: with ``strict=True``, naming the ids the model never
                trained on and saying when an id is only in the validation split.
        """
        users, items = list(users), list(items)
        pred, fallback = self.predict_values(users, items, strict)
        # ids as the model stores them ("1" asked of int ids is 1); an item given by title stays its title
        parsed_items = self.items.parse(items)
        known = self.items.index(parsed_items) != UNKNOWN
        items = [p if ok else raw for p, ok, raw in zip(parsed_items, known, items)]
        return pd.DataFrame({"user": list(self.users.parse(users)), "item": items, "prediction": pred,
                             "fallback": fallback})

    def predict_values(
        self, users: Sequence[Any], items: Sequence[Any], strict: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` as two arrays, ``(predictions, fallback)``, without the DataFrame (for servers)."""
        self._rating_model()
        users, items = _sequence(users), _sequence(items)
        if len(users) != len(items):
            raise ConfigError(f"users and items must have the same length, got {len(users)} and {len(items)}")
        if strict:
            u = self.catalogue.trained_user_rows(users)
            i = self.catalogue.trained_item_rows_of(items)
        else:
            u, i = self.users.index(self.users.parse(users)), self.catalogue.item_rows(items)
            self.catalogue.no_mistyped_titles(items, i)
        u_ok = (u != UNKNOWN) & self.user_trained[np.maximum(u, 0)]
        i_ok = (i != UNKNOWN) & self.item_trained[np.maximum(i, 0)]
        users_or_average, items_or_average = self._with_averages
        u_vec = users_or_average.index_select(0, torch.from_numpy(np.where(u_ok, u, len(self.users))))
        i_vec = items_or_average.index_select(0, torch.from_numpy(np.where(i_ok, i, len(self.items))))
        with torch.no_grad():
            pred = self.on_scale(self.view.pair(u_vec, i_vec).cpu().numpy().astype(np.float64))
        neither = ~u_ok & ~i_ok
        if neither.any() and self.history is not None:
            pred[neither] = self.history.global_mean
        fallback = np.select([neither, ~u_ok, ~i_ok], ["user+item", "user", "item"], "")
        return pred, fallback

    def _positions(self, rows: np.ndarray) -> np.ndarray:
        """Each item's column among ``rows`` (-1 where it is not one of them)."""
        position = np.full(len(self.items), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        return position

    @functools.cached_property
    def _trained_positions(self) -> np.ndarray:
        return self._positions(self.trained_item_rows)

    def _candidates(self, items: Iterable[Any] | None, min_ratings: int = 0) -> np.ndarray:
        """Candidate item rows: ``items`` (ids or titles) or every trained item, with ``min_ratings`` or more."""
        if items is None:
            rows = self.trained_item_rows
        else:
            rows = np.unique(self.catalogue.trained_item_rows_of(_sequence(items)))
            if len(rows) == 0:
                raise DataError("items= names no candidate items")
        if min_ratings > 0:
            counts = self._history_required("items' rating counts", "pass min_ratings=0").item_counts
            rows = rows[counts[rows] >= min_ratings]
            if len(rows) == 0:
                raise DataError(f"no candidate item has {min_ratings} or more training ratings")
        return rows

    def _scorer(
        self, rank_by: str, user_rows: np.ndarray | None = None, new_users: Interactions | None = None,
        new_vectors: torch.Tensor | None = None,
    ) -> Callable[[int, int, np.ndarray], torch.Tensor]:
        """``score(start, stop, candidates)``: the scores of users ``start:stop`` for the candidate items.

        The users are trained rows (``user_rows``), or someone new: their interactions
        (``new_users``, for the ranker) or folded-in vectors (``new_vectors``, for the rating model).
        """
        if rank_by == "ranking":
            ranker = self.ranker

            def score(start: int, stop: int, candidates: np.ndarray) -> torch.Tensor:
                if user_rows is not None:
                    rows = user_rows[start:stop]
                    users = self.interactions.take(rows)
                else:
                    rows, users = np.full(stop - start, -1), new_users.take(np.arange(start, stop))
                return ranker.score(users, rows)[:, torch.from_numpy(candidates)]

            return score
        view = self.view
        vectors = view.users[torch.from_numpy(user_rows)] if user_rows is not None else new_vectors

        def score(start: int, stop: int, candidates: np.ndarray) -> torch.Tensor:
            item_vectors = self._candidate_vectors(candidates)
            return view.grid(vectors[start:stop], item_vectors)

        return score

    @functools.cached_property
    def _trained_item_vectors(self) -> torch.Tensor:
        return self.view.items[torch.from_numpy(self.trained_item_rows)].contiguous()

    def _candidate_vectors(self, candidates: np.ndarray) -> torch.Tensor:
        if candidates is self.trained_item_rows:  # the common case: gathered once
            return self._trained_item_vectors
        return self.view.items[torch.from_numpy(candidates)]

    def _top_n(
        self, score: Callable[[int, int, np.ndarray], torch.Tensor], k: int,
        seen: tuple[np.ndarray, np.ndarray] | None, n: int, candidates: np.ndarray, width: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and item rows of the best ``n`` candidates for each of ``k`` users, seen pairs removed.

        Users are scored in blocks of about ``PAIRS_PER_CHUNK`` (user, item) scores (``width`` items
        scored per user: the candidates, or the whole catalogue for a ranker), so memory stays
        bounded however many users are asked about (all of them, when evaluating).
        """
        if n < 1:
            raise ConfigError(f"n must be a positive integer, got {n}")
        position = self._trained_positions if candidates is self.trained_item_rows else self._positions(candidates)
        which = cols = np.zeros(0, dtype=np.int64)
        if seen is not None:
            cols = position[seen[1]]
            hit = cols >= 0
            order = np.argsort(seen[0][hit], kind="stable")
            which, cols = seen[0][hit][order], cols[hit][order]
        keep = min(n, len(candidates))
        block = max(1, PAIRS_PER_CHUNK // max(width or len(candidates), 1))
        values, indices = [], []
        for start in range(0, k, block):
            stop = min(start + block, k)
            with torch.no_grad():
                scores = score(start, stop, candidates)
            lo, hi = np.searchsorted(which, [start, stop])
            scores[torch.from_numpy(which[lo:hi] - start), torch.from_numpy(cols[lo:hi])] = -torch.inf
            top = torch.topk(scores, keep, dim=1)
            values.append(top.values.cpu().numpy())
            indices.append(top.indices.cpu().numpy())
        if not values:
            return np.zeros((0, keep), dtype=np.float32), np.zeros((0, keep), dtype=np.int64)
        return np.concatenate(values), candidates[np.concatenate(indices)]

    def _frame(self, user_ids: Sequence[Any], scores: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        k, n = scores.shape
        frame = pd.DataFrame(
            {
                "user": np.repeat(np.asarray(user_ids), n),
                "rank": np.tile(np.arange(1, n + 1), k),
                "item": self.items.ids[rows.reshape(-1)],
                "score": scores.reshape(-1).astype(np.float64),
            }
        )
        if self.titles is not None:
            frame.insert(3, "title", self.catalogue.titles_of(rows.reshape(-1)))
        return frame[np.isfinite(frame["score"].to_numpy())].reset_index(drop=True)

    def _history_required(self, needed_for: str, remedy: str) -> RatingHistory:
        if self.history is None:
            raise DataError(f"this model was saved without its rating history, so {needed_for} are unknown; {remedy}")
        return self.history

    def recommend(
        self,
        users: Sequence[Any],
        n: int = 10,
        exclude_seen: bool = True,
        items: Iterable[Any] | None = None,
        min_ratings: int = 0,
        rank_by: str | None = None,
    ) -> pd.DataFrame:
        """The top ``n`` items for each user, by blocks of users: a matrix product and a ``topk`` each.

        Args:
            users: raw user ids (the model must have trained on them; for
                someone new, see :meth:`recommend_new_user`).
            n: how many items per user.
            exclude_seen: drop items the user has rated.
            items: restrict the candidates to these items (ids or titles);
                default: every item the model trained on.
            min_ratings: only items with at least this many training ratings.
            rank_by: ``"ranking"`` (the ranking model; the default when there is one)
                or ``"rating"`` (highest predicted rating first, the lesson's way).

        Returns:
            A DataFrame ``user, rank, item, [title,] score`` (score: the ranking model's
            score, or the predicted rating when ranking by rating).
        """
        users = list(users)
        rows = self.catalogue.trained_user_rows(users)
        exclude = self._history_required("seen items", "pass exclude_seen=False") if exclude_seen else None
        scores, item_rows = self.top_n(rows, n, exclude, self._candidates(items, min_ratings), rank_by)
        return self._frame(self.users.ids[rows], scores, item_rows)  # ids as the data stores them ("1" -> 1)

    def top_n(
        self,
        user_rows: np.ndarray,
        n: int = 10,
        exclude: RatingHistory | None = None,
        candidates: np.ndarray | None = None,
        rank_by: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The row-level form of :meth:`recommend`, for evaluation code and servers.

        Returns ``(scores, item_rows)``, each ``(len(user_rows), min(n, #candidates))``,
        best first; items that ``exclude`` lists for a user score ``-inf``.
        Candidates default to every trained item.
        """
        user_rows = np.asarray(user_rows, dtype=np.int64)
        seen = exclude.seen_pairs(user_rows) if exclude is not None else None
        candidates = self.trained_item_rows if candidates is None else np.asarray(candidates)
        how = self.check_rank_by(rank_by)
        width = len(self.items) if how == "ranking" else len(candidates)
        scores, rows = self._top_n(self._scorer(how, user_rows=user_rows), len(user_rows), seen, n, candidates, width)
        return (self.on_scale(scores) if how == "rating" else scores), rows

    def _similar(self, sims: torch.Tensor, row: int, allowed: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        sims = sims.clone()
        mask = torch.from_numpy(~allowed)
        mask[row] = True
        sims[mask] = -torch.inf
        top = torch.topk(sims, min(n, int(allowed.sum())), dim=0)
        keep = torch.isfinite(top.values)
        return top.values[keep].cpu().numpy().astype(np.float64), top.indices[keep].cpu().numpy()

    @staticmethod
    def _cosines(factors: torch.Tensor, row: int) -> torch.Tensor:
        unit = torch.nn.functional.normalize(factors, dim=1)
        return unit @ unit[row]

    def similar_items(self, item: Any, n: int = 10, min_ratings: int = 0, rank_by: str | None = None) -> pd.DataFrame:
        """The ``n`` items most like ``item`` (raw id or title).

        With a ranking model that knows item similarity (EASE: the item-item weight from
        ``item`` to each other item; iALS: cosine of the item vectors), it decides; else, or
        with ``rank_by="rating"``, the cosine of the rating model's item factors.
        ``min_ratings`` keeps only items with that many training ratings (a minimum support).
        """
        if n < 1:
            raise ConfigError(f"n must be a positive integer, got {n}")
        row = self.item_row(item)
        by_ranker = self.ranker is not None and self.ranker.item_similarity
        if not by_ranker and self.model is None:
            raise DataError(f"the {self.ranker.name} ranker has no notion of similar items, and this model has no "
                            "rating model to compare items by")
        if self.check_rank_by(rank_by if rank_by is not None or by_ranker else "rating") == "ranking":
            if not by_ranker:
                raise DataError(f"the {self.ranker.name} ranker has no notion of similar items; rank by rating")
            with torch.no_grad():
                sims = self.ranker.similar_to(row)
            if not torch.isfinite(sims).any():
                raise DataError(f"item {item!r} has too few ratings for the {self.ranker.name} ranking model to say "
                                "what it is like; rank_by='rating' compares the rating model's factors")
        else:
            sims = self._cosines(self.view.item_factors, row)
        allowed = self.item_trained.copy()
        if min_ratings > 0:
            counts = self._history_required("items' rating counts", "pass min_ratings=0").item_counts
            allowed &= counts >= min_ratings
        sims, rows = self._similar(sims, row, allowed, n)
        frame = pd.DataFrame({"item": self.items.ids[rows], "similarity": sims})
        if self.titles is not None:
            frame.insert(1, "title", self.catalogue.titles_of(rows))
        return frame

    def similar_users(self, user: Any, n: int = 10) -> pd.DataFrame:
        """The ``n`` users whose rating-model factors have the highest cosine similarity to ``user``."""
        if n < 1:
            raise ConfigError(f"n must be a positive integer, got {n}")
        (row,) = self.catalogue.trained_user_rows([user])
        if self.model is None:
            factors = self.ranker.state().get("user_factors") if self.ranker is not None else None
            if factors is None:
                raise DataError(f"a {self.ranker.name} ranker has no user vectors to compare users by")
        else:
            factors = self.view.user_factors
        sims, rows = self._similar(self._cosines(factors, int(row)), int(row), self.user_trained, n)
        return pd.DataFrame({"user": self.users.ids[rows], "similarity": sims})

    # --- new users ---------------------------------------------------------------------------
    def _new_user_pairs(self, ratings: Mapping[Any, float] | pd.DataFrame | Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """Item rows and ratings (``None`` for a bare list of items) of someone new, checked."""
        if isinstance(ratings, pd.DataFrame):
            item_col = self.columns.get("item")
            rating_col = self.columns.get("rating")
            if item_col not in ratings.columns:
                if ratings.shape[1] < 1:
                    raise DataError("fold-in needs an item column")
                item_col = ratings.columns[0]
            if rating_col not in ratings.columns:  # by name, else the other column of a two-column file
                others = [c for c in ratings.columns if c != item_col]
                rating_col = others[0] if len(others) == 1 else None
            items = list(ratings[item_col])
            values = list(ratings[rating_col]) if rating_col in ratings.columns else None
        elif isinstance(ratings, Mapping):
            items, values = list(ratings.keys()), list(ratings.values())
        else:
            items, values = list(ratings), None
        if not items:
            raise DataError("fold-in needs at least one item")
        rows = self.catalogue.trained_item_rows_of(items)
        if values is None:
            return rows, None
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float32)
        if not np.isfinite(numbers).all():
            raise DataError(f"fold-in ratings must be numbers; got {values[:5]}")
        scale = self.rating_scale
        if scale is not None and ((numbers < scale[0]) | (numbers > scale[1])).any():
            bad = numbers[(numbers < scale[0]) | (numbers > scale[1])]
            raise DataError(
                f"fold-in rating {float(bad[0]):g} is outside the training ratings' scale "
                f"{scale[0]:g}..{scale[1]:g}; rate on the model's scale"
            )
        return rows, numbers

    def on_scale(self, ratings: np.ndarray) -> np.ndarray:
        """Predicted ratings clipped to the training ratings' scale, for models without a ``y_range`` (the
        default Bayesian PMF's dot product can say 5.6 on a 0.5-5 scale); a ``y_range`` already bounds them."""
        scale = self.rating_scale
        if scale is None or getattr(self.model, "y_range", None) is not None:
            return ratings
        return np.where(np.isfinite(ratings), np.clip(ratings, *scale), ratings)  # -inf marks a removed item

    @functools.cached_property
    def rating_scale(self) -> tuple[float, float] | None:
        """The lowest and highest training rating (``None`` for implicit feedback; a model saved before
        the ranking models knew only its ``y_range``, if it had one)."""
        if not self.predicts_ratings:
            return None
        recorded = self.info.get("rating_scale")
        if isinstance(recorded, list) and len(recorded) == 2:
            return float(recorded[0]), float(recorded[1])
        if self.interactions is not None and self.interactions.nnz:
            values = self.interactions.values
            return float(values.min()) - self.interactions.offset, float(values.max()) - self.interactions.offset
        y_range = getattr(self.model, "y_range", None)
        return (float(y_range[0]), float(y_range[1])) if y_range is not None else None

    def _new_user_interactions(self, rows: np.ndarray, ratings: np.ndarray | None) -> Interactions:
        """The interactions of someone new (one row), valued as the ranker saw training users'."""
        if ratings is None or not self.predicts_ratings:
            weights = np.ones(len(rows), dtype=np.float32) if ratings is None else ratings
        else:
            weights = ratings + np.float32(self.interactions.offset)
        if (weights <= 0).any():
            raise DataError(
                f"fold-in values must be positive on this model's scale; got {float(weights.min()):g} "
                "(a rating below the lowest training rating, or a zero or negative weight)"
            )
        return Interactions.from_rows(np.zeros(len(rows)), rows, weights, 1, len(self.items), self.interactions.offset)

    def fold_in(
        self, ratings: Mapping[Any, float] | pd.DataFrame, noise: float | None = None, max_iter: int = 100
    ) -> NewUser:
        """Fit a rating-model vector for someone the model has not seen, from their ratings; items stay frozen.

        The new user is taken to be one more member of the trained population:
        with ``x̄`` and ``Σ`` the mean and covariance of the trained users'
        vectors (factors and bias), L-BFGS finds the most probable vector::

            x* = argmin  Σ_i (r̂(x, i) - r_i)²  +  noise · (x - x̄)ᵀ Σ⁻¹ (x - x̄)

        With few ratings the answer stays among real users' tastes; with many,
        the ratings decide. No retraining: item vectors and the model are frozen.
        For a plain dot product (no ``y_range``, no network: the default model) the
        objective is quadratic and its minimum one small linear solve; with a
        ``y_range`` (the lesson's model) Gauss-Newton steps find it, each one small
        solve; only a neural model takes L-BFGS (``max_iter`` iterations).

        Args:
            ratings: ``{item: rating}`` (ids or titles), or a DataFrame with the model's
                item and rating columns (by name; else the first column is the item and, in a
                two-column file, the other the rating).
            noise: variance of a rating around its prediction; default: the
                training MSE recorded with the model (``info["train_mse"]``), else 0.5.
            max_iter: the most Gauss-Newton steps or L-BFGS iterations.
        """
        noise = float(self.info.get("train_mse", 0.5)) if noise is None else float(noise)
        if not noise > 0:
            raise ConfigError(f"noise must be a positive variance, got {noise}")
        view = self.view
        rows, values = self._new_user_pairs(ratings)
        if values is None:
            raise DataError("fold-in for the rating model needs a rating for each item")
        items = view.items[torch.from_numpy(rows)]
        target = torch.from_numpy(values).to(items.device)
        mean, precision = self._user_prior
        cut = len(mean)
        tail = self._average_user[cut:]
        if view.head is None and view.y_range is None:  # a plain dot product: the minimum is a ridge solve
            free_items, tail_items = items[:, :cut].double(), items[:, cut:].double()
            lhs = free_items.T @ free_items + noise * precision.double()
            rhs = free_items.T @ (target.double() - tail_items @ tail.double()) + noise * precision.double() @ mean.double()
            solved = torch.linalg.solve(lhs, rhs).to(mean.dtype)
            return NewUser(torch.cat([solved, tail]), rows, values)
        if view.head is None:  # a dot product squashed into y_range: a few Gauss-Newton steps
            return NewUser(torch.cat([self._gauss_newton(items, target, tail, noise, max_iter), tail]), rows, values)
        free = mean.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([free], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            x = torch.cat([free, tail]).expand(len(rows), -1)
            d = free - mean
            loss = ((view.pair(x, items) - target) ** 2).sum() + noise * (d @ precision @ d)
            # the gradient of the new vector alone: nothing is written to the model's parameters, so
            # concurrent fold-ins (the server's threads) share the model safely
            (free.grad,) = torch.autograd.grad(loss, [free])
            return loss.detach()

        opt.step(closure)
        return NewUser(torch.cat([free.detach(), tail]), rows, values)

    def _gauss_newton(self, items: torch.Tensor, target: torch.Tensor, tail: torch.Tensor, noise: float,
                      max_iter: int, tol: float = 1e-7) -> torch.Tensor:
        """The fold-in minimum for ``r̂ = low + (high - low)·σ(x·q_i + tail·t_i)``: Gauss-Newton steps,
        each one small solve of ``(JᵀJ + noise·Λ) δ = -(Jᵀ(r̂ - r) + noise·Λ(x - x̄))``, from the population mean,
        until the step is below ``tol`` (a few steps) or ``max_iter``. Microseconds where L-BFGS took tens of ms."""
        mean, precision = (t.double() for t in self._user_prior)
        low, high = self.view.y_range
        cut = len(mean)
        free_items, offset = items[:, :cut].double(), items[:, cut:].double() @ tail.double()
        prior = noise * precision
        target = target.double()

        def objective(x: torch.Tensor) -> float:
            d = x - mean
            fit = low + (high - low) * torch.sigmoid(free_items @ x + offset) - target
            return float(fit @ fit + d @ prior @ d)

        x, current = mean.clone(), objective(mean)
        for _ in range(max_iter):
            s = torch.sigmoid(free_items @ x + offset)
            residual = low + (high - low) * s - target
            jac = ((high - low) * s * (1 - s))[:, None] * free_items
            step = torch.linalg.solve(jac.T @ jac + prior, jac.T @ residual + prior @ (x - mean))
            for _ in range(30):  # a step is taken only where the objective falls (halved until it does)
                moved = objective(x - step)
                if moved <= current:
                    break
                step = step / 2
            else:
                break  # no step lowers it: x is the minimum to working precision
            x, current = x - step, moved
            if float(step.abs().max()) < tol:
                break
        return x.to(self._user_prior[0].dtype)

    def recommend_new_user(
        self,
        ratings: Mapping[Any, float] | pd.DataFrame | Sequence[Any] | NewUser,
        n: int = 10,
        exclude_seen: bool = True,
        items: Iterable[Any] | None = None,
        rank_by: str | None = None,
        min_ratings: int = 0,
    ) -> pd.DataFrame:
        """The top ``n`` for someone new, without retraining.

        ``ratings`` is ``{item: rating}``, a DataFrame of items and ratings, or (for the
        ranking model) just a list of items they liked, watched or bought. The ranking model
        scores their interaction row directly; the rating model folds them in first
        (:meth:`fold_in`).
        """
        how = self.check_rank_by("rating" if isinstance(ratings, NewUser) and rank_by is None else rank_by)
        if how == "ranking" and isinstance(ratings, NewUser):
            raise DataError("a NewUser is the rating model's fold-in: pass their items (and ratings) to rank with "
                            "the ranking model, or rank_by='rating'")
        if how == "ranking":
            rows, values = self._new_user_pairs(ratings)
            score = self._scorer(how, new_users=self._new_user_interactions(rows, values))
        else:
            new = ratings if isinstance(ratings, NewUser) else self.fold_in(ratings)
            rows = new.item_rows
            score = self._scorer(how, new_vectors=new.vector[None, :])
        seen = (np.zeros(len(rows), dtype=np.int64), rows) if exclude_seen else None
        scores, top = self._top_n(score, 1, seen, n, self._candidates(items, min_ratings))
        return self._frame(["new user"], self.on_scale(scores) if how == "rating" else scores, top)

    def predict_new_user(self, new: NewUser, items: Sequence[Any]) -> np.ndarray:
        """Predicted ratings of a folded-in user for ``items`` (ids or titles)."""
        rows = self.catalogue.trained_item_rows_of(_sequence(items))
        with torch.no_grad():
            scores = self.view.grid(new.vector[None, :], self.view.items[torch.from_numpy(rows)])[0].cpu().numpy()
        return self.on_scale(scores)
