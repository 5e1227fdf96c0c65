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

import difflib
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from collabkit.data.history import RatingHistory
from collabkit.data.vocab import UNKNOWN, Vocabulary
from collabkit.errors import DataError, NotFittedError, UnknownIdError
from collabkit.io import load_model, save_model
from collabkit.models import DotProduct, DotProductBias, EmbeddingNN, sigmoid_range
from collabkit.training.losses import MSELossFlat

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


def factor_view(model: torch.nn.Module) -> FactorView:
    """The :class:`FactorView` of a built-in model."""
    with torch.no_grad():
        if isinstance(model, DotProductBias):
            p, q = model.u_weight.weight.detach(), model.i_weight.weight.detach()
            b_u, b_i = model.u_bias.weight.detach(), model.i_bias.weight.detach()
            users = torch.cat([p, b_u, torch.ones_like(b_u)], 1)
            items = torch.cat([q, torch.ones_like(b_i), b_i], 1)
            return FactorView(users, items, p, q, fixed_tail=1, y_range=model.y_range)
        if isinstance(model, DotProduct):
            p, q = model.u_weight.weight.detach(), model.i_weight.weight.detach()
            return FactorView(p, q, p, q, y_range=model.y_range)
        if isinstance(model, EmbeddingNN):
            e_u, e_i = model.embeds[0].weight.detach(), model.embeds[1].weight.detach()
            return FactorView(e_u, e_i, e_u, e_i, head=model.head)
    raise TypeError(
        f"a Recommender needs a DotProduct, DotProductBias or EmbeddingNN model, got {type(model).__name__}"
    )


@dataclass
class NewUser:
    """A user folded into a trained model from a few ratings."""

    vector: torch.Tensor  # the fitted user vector, in FactorView form
    item_rows: np.ndarray  # rows of the items they rated
    ratings: np.ndarray


def _sequence(values: Iterable[Any]) -> Sequence[Any]:
    """``values`` as something with a length and positions: arrays as they are, Series as arrays, else a list."""
    if isinstance(values, pd.Series):
        return values.to_numpy()
    return values if isinstance(values, np.ndarray) else list(values)


class Recommender:
    """A trained model together with the vocabularies and history that give its rows meaning.

    Build one from a fitted learner (:meth:`from_learner`) or a saved model
    directory (:meth:`load`).

    Args:
        model: a ``DotProduct``, ``DotProductBias`` or ``EmbeddingNN``.
        users, items: the vocabularies of the model's rows.
        columns: ``{"user": ..., "item": ..., "rating": ...}`` column names.
        titles: optional title per item row.
        info: metadata kept with a saved model.
        history: who rated what; needed for ``exclude_seen`` and to know which
            rows were trained.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        users: Vocabulary,
        items: Vocabulary,
        columns: dict[str, str] | None = None,
        titles: Sequence[str | None] | None = None,
        info: dict[str, Any] | None = None,
        history: RatingHistory | None = None,
    ) -> None:
        self.model = model.eval()
        self.users, self.items = users, items
        self.columns = columns or {"user": users.name, "item": items.name, "rating": "rating"}
        self.titles = list(titles) if titles is not None else None
        self.info = info or {}
        self.history = history

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
        return cls(learn.model, dls.users, dls.items, columns, row_titles, info, RatingHistory.from_dls(dls))

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model directory written by :meth:`save` (no pickle; see :mod:`collabkit.io`)."""
        m = load_model(path)
        return cls(m.model, m.users, m.items, m.columns, m.titles, m.info, m.history)

    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically; see :func:`collabkit.io.save_model`."""
        return save_model(path, self.model, self.users, self.items, self.columns, self.titles, self.info, self.history)

    # --- the model as vectors --------------------------------------------------------------
    @functools.cached_property
    def view(self) -> FactorView:
        return factor_view(self.model)

    @property
    def user_trained(self) -> np.ndarray:
        return self.history.user_trained if self.history is not None else np.ones(len(self.users), dtype=bool)

    @property
    def item_trained(self) -> np.ndarray:
        return self.history.item_trained if self.history is not None else np.ones(len(self.items), dtype=bool)

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

    # --- id lookups -----------------------------------------------------------------------
    def _rows(self, values: Sequence[Any], vocab: Vocabulary, trained: np.ndarray, role: str) -> np.ndarray:
        """Rows of trained ids; raises naming ids that are unknown or only in the validation split."""
        values = vocab.parse(values)
        rows = vocab.index(values)
        untrained = (rows != UNKNOWN) & ~trained[np.where(rows == UNKNOWN, 0, rows)]
        if (rows == UNKNOWN).any():
            vocab.index_strict(values)  # raises, naming the unknown ids
        if untrained.any():
            bad = ", ".join(repr(v) for v in pd.unique(np.asarray(values, dtype=object)[untrained])[:5])
            raise UnknownIdError(
                f"{role} id(s) {bad} appear only in the validation split: the model never trained on them"
            )
        return rows

    @functools.cached_property
    def _title_rows(self) -> dict[str, int]:
        if self.titles is None:
            return {}
        rows: dict[str, int] = {}
        for row, title in enumerate(self.titles):
            if title is not None:
                rows.setdefault(str(title), row)
        return rows

    def item_row(self, item: Any) -> int:
        """The row of an item given by raw id or by title; a miss suggests the closest titles."""
        return int(self._trained_item_rows([item])[0])

    def _trained_item_rows(self, items: Sequence[Any]) -> np.ndarray:
        """Rows of items by raw id or title, all at once; the first that is unknown or untrained
        raises an :class:`UnknownIdError` naming it (with the closest titles for a miss)."""
        rows = self._item_rows(items)
        bad = np.flatnonzero((rows == UNKNOWN) | ~self.item_trained[np.maximum(rows, 0)])
        if len(bad):
            item = items[bad[0]]
            if rows[bad[0]] != UNKNOWN:
                raise UnknownIdError(f"item {item!r} appears only in the validation split: the model never trained on it")
            close = difflib.get_close_matches(str(item), list(self._title_rows), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(t) for t in close)}?" if close else ""
            raise UnknownIdError(f"unknown item id or title {item!r}{hint}")
        return rows

    def _item_rows(self, items: Sequence[Any]) -> np.ndarray:
        """Rows of items given by raw id or title; ``UNKNOWN`` where neither matches. A string that
        is not an id is looked up as a title, even one that parses as a number ("1917")."""
        rows = self.items.index(self.items.parse(items))
        if self.titles is not None:
            for k in np.flatnonzero(rows == UNKNOWN):
                if isinstance(items[k], str):
                    rows[k] = self._title_rows.get(items[k], UNKNOWN)
        return rows

    def title(self, item: Any) -> str | None:
        """The title of a raw item id, or ``None`` when titles are unknown."""
        if self.titles is None:
            return None
        return self.titles[int(self.items.index_strict(self.items.parse([item]))[0])]

    def _titles_of(self, rows: np.ndarray) -> list[str | None] | None:
        return None if self.titles is None else [self.titles[r] for r in rows]

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
        return pd.DataFrame({"user": users, "item": items, "prediction": pred, "fallback": fallback})

    def predict_values(
        self, users: Sequence[Any], items: Sequence[Any], strict: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` as two arrays, ``(predictions, fallback)``, without the DataFrame (for servers)."""
        users, items = _sequence(users), _sequence(items)
        if len(users) != len(items):
            raise ValueError(f"users and items must have the same length, got {len(users)} and {len(items)}")
        if strict:
            u = self._rows(users, self.users, self.user_trained, "user")
            i = self._trained_item_rows(items)
        else:
            u, i = self.users.index(self.users.parse(users)), self._item_rows(items)
        u_ok = (u != UNKNOWN) & self.user_trained[np.maximum(u, 0)]
        i_ok = (i != UNKNOWN) & self.item_trained[np.maximum(i, 0)]
        users_or_average, items_or_average = self._with_averages
        u_vec = users_or_average.index_select(0, torch.from_numpy(np.where(u_ok, u, len(self.users))))
        i_vec = items_or_average.index_select(0, torch.from_numpy(np.where(i_ok, i, len(self.items))))
        with torch.no_grad():
            pred = self.view.pair(u_vec, i_vec).cpu().numpy().astype(np.float64)
        neither = ~u_ok & ~i_ok
        if neither.any() and self.history is not None:
            pred[neither] = self.history.global_mean
        fallback = np.select([neither, ~u_ok, ~i_ok], ["user+item", "user", "item"], "")
        return pred, fallback

    @functools.cached_property
    def _trained_items(self) -> np.ndarray:
        return np.flatnonzero(self.item_trained)

    @functools.cached_property
    def _trained_item_vectors(self) -> tuple[torch.Tensor, np.ndarray]:
        """The trained items' vectors, and each item's column among them (-1 if untrained)."""
        rows = self._trained_items
        return self.view.items[torch.from_numpy(rows)].contiguous(), self._positions(rows)

    def _positions(self, rows: np.ndarray) -> np.ndarray:
        """Each item's column among ``rows`` (-1 where it is not one of them)."""
        position = np.full(len(self.items), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        return position

    def _candidates(self, items: Iterable[Any] | None) -> np.ndarray:
        if items is None:
            return self._trained_items
        rows = np.unique(self._trained_item_rows(_sequence(items)))
        if len(rows) == 0:
            raise DataError("items= names no candidate items")
        return rows

    def _top_n(
        self, user_vectors: torch.Tensor, seen: tuple[np.ndarray, np.ndarray] | None, n: int, candidates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and item rows of the best ``n`` candidates per user vector, seen pairs removed.

        Users are scored in blocks of about ``PAIRS_PER_CHUNK`` (user, item) scores, so memory stays
        bounded however many users are asked about (all of them, when evaluating).
        """
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        if candidates is self._trained_items:  # the common case: vectors and positions computed once
            item_vectors, position = self._trained_item_vectors
        else:
            item_vectors, position = self.view.items[torch.from_numpy(candidates)], self._positions(candidates)
        which = cols = np.zeros(0, dtype=np.int64)
        if seen is not None:
            cols = position[seen[1]]
            hit = cols >= 0
            order = np.argsort(seen[0][hit], kind="stable")
            which, cols = seen[0][hit][order], cols[hit][order]
        k, keep = len(user_vectors), min(n, len(candidates))
        block = max(1, PAIRS_PER_CHUNK // max(len(candidates), 1))
        values, indices = [], []
        for start in range(0, k, block):
            stop = min(start + block, k)
            with torch.no_grad():
                scores = self.view.grid(user_vectors[start:stop], item_vectors)
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
            frame.insert(3, "title", self._titles_of(rows.reshape(-1)))
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
    ) -> pd.DataFrame:
        """The top ``n`` items for each user, by blocks of users: a matrix product and a ``topk`` each.

        Args:
            users: raw user ids (the model must have trained on them; for
                someone new, see :meth:`recommend_new_user`).
            n: how many items per user.
            exclude_seen: drop items the user has rated.
            items: restrict the candidates to these items (ids or titles);
                default: every item the model trained on.
            min_ratings: only items with at least this many training ratings
                (a film rated once or twice can have an extreme predicted rating).

        Returns:
            A DataFrame ``user, rank, item, [title,] score`` (score: the predicted rating).
        """
        users = list(users)
        rows = self._rows(users, self.users, self.user_trained, "user")
        exclude = self._history_required("seen items", "pass exclude_seen=False") if exclude_seen else None
        candidates = self._candidates(items)
        if min_ratings > 0:
            counts = self._history_required("items' rating counts", "pass min_ratings=0").item_counts
            candidates = candidates[counts[candidates] >= min_ratings]
            if len(candidates) == 0:
                raise DataError(f"no candidate item has {min_ratings} or more training ratings")
        scores, item_rows = self.top_n(rows, n, exclude, candidates)
        return self._frame(users, scores, item_rows)

    def top_n(
        self,
        user_rows: np.ndarray,
        n: int = 10,
        exclude: RatingHistory | None = None,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The row-level form of :meth:`recommend`, for evaluation code.

        Returns ``(scores, item_rows)``, each ``(len(user_rows), min(n, #candidates))``,
        best first; items that ``exclude`` lists for a user score ``-inf``.
        Candidates default to every trained item.
        """
        user_rows = np.asarray(user_rows, dtype=np.int64)
        seen = exclude.seen_pairs(user_rows) if exclude is not None else None
        candidates = self._trained_items if candidates is None else np.asarray(candidates)
        return self._top_n(self.view.users[torch.from_numpy(user_rows)], seen, n, candidates)

    def _similar(self, factors: torch.Tensor, row: int, allowed: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        unit = torch.nn.functional.normalize(factors, dim=1)
        sims = unit @ unit[row]
        mask = torch.from_numpy(~allowed)
        mask[row] = True
        sims[mask] = -torch.inf
        top = torch.topk(sims, min(n, int(allowed.sum())), dim=0)
        keep = torch.isfinite(top.values)
        return top.values[keep].cpu().numpy().astype(np.float64), top.indices[keep].cpu().numpy()

    def similar_items(self, item: Any, n: int = 10) -> pd.DataFrame:
        """The ``n`` items whose factors have the highest cosine similarity to ``item`` (raw id or title)."""
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        sims, rows = self._similar(self.view.item_factors, self.item_row(item), self.item_trained, n)
        frame = pd.DataFrame({"item": self.items.ids[rows], "similarity": sims})
        if self.titles is not None:
            frame.insert(1, "title", self._titles_of(rows))
        return frame

    def similar_users(self, user: Any, n: int = 10) -> pd.DataFrame:
        """The ``n`` users whose factors have the highest cosine similarity to ``user``."""
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        (row,) = self._rows([user], self.users, self.user_trained, "user")
        sims, rows = self._similar(self.view.user_factors, int(row), self.user_trained, n)
        return pd.DataFrame({"user": self.users.ids[rows], "similarity": sims})

    # --- new users ---------------------------------------------------------------------------
    def fold_in(
        self, ratings: Mapping[Any, float] | pd.DataFrame, noise: float | None = None, max_iter: int = 100
    ) -> NewUser:
        """Fit a vector for someone the model has not seen, from their ratings; items stay frozen.

        The new user is taken to be one more member of the trained population:
        with ``x̄`` and ``Σ`` the mean and covariance of the trained users'
        vectors (factors and bias), L-BFGS finds the most probable vector::

            x* = argmin  Σ_i (r̂(x, i) - r_i)²  +  noise · (x - x̄)ᵀ Σ⁻¹ (x - x̄)

        With few ratings the answer stays among real users' tastes; with many,
        the ratings decide. No retraining: item vectors and the model are frozen.

        Args:
            ratings: ``{item: rating}`` (ids or titles), or a DataFrame whose
                first two columns are item and rating.
            noise: variance of a rating around its prediction; default: the
                training MSE recorded with the model (``info["train_mse"]``), else 0.5.
            max_iter: L-BFGS iterations.
        """
        noise = float(self.info.get("train_mse", 0.5)) if noise is None else float(noise)
        if not noise > 0:
            raise ValueError(f"noise must be a positive variance, got {noise}")
        if isinstance(ratings, pd.DataFrame):
            if ratings.shape[1] < 2:
                raise DataError(f"fold-in ratings need item and rating columns, got {list(ratings.columns)}")
            pairs = list(zip(ratings.iloc[:, 0], ratings.iloc[:, 1]))
        else:
            pairs = list(dict(ratings).items())
        if not pairs:
            raise DataError("fold-in needs at least one (item, rating) pair")
        rows = self._trained_item_rows([item for item, _ in pairs])
        values = pd.to_numeric(pd.Series([r for _, r in pairs]), errors="coerce").to_numpy(dtype=np.float32)
        if not np.isfinite(values).all():
            raise DataError(f"fold-in ratings must be numbers; got {[r for _, r in pairs][:5]}")
        view = self.view
        items = view.items[torch.from_numpy(rows)]
        target = torch.from_numpy(values).to(items.device)
        mean, precision = self._user_prior
        cut = len(mean)
        tail = self._average_user[cut:]
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

    def recommend_new_user(
        self,
        ratings: Mapping[Any, float] | pd.DataFrame | NewUser,
        n: int = 10,
        exclude_seen: bool = True,
        items: Iterable[Any] | None = None,
    ) -> pd.DataFrame:
        """Fold a new user in (see :meth:`fold_in`) and return their top ``n``, without retraining."""
        new = ratings if isinstance(ratings, NewUser) else self.fold_in(ratings)
        seen = (np.zeros(len(new.item_rows), dtype=np.int64), new.item_rows) if exclude_seen else None
        scores, rows = self._top_n(new.vector[None, :], seen, n, self._candidates(items))
        return self._frame(["new user"], scores, rows)

    def predict_new_user(self, new: NewUser, items: Sequence[Any]) -> np.ndarray:
        """Predicted ratings of a folded-in user for ``items`` (ids or titles)."""
        rows = self._trained_item_rows(_sequence(items))
        with torch.no_grad():
            return self.view.grid(new.vector[None, :], self.view.items[torch.from_numpy(rows)])[0].cpu().numpy()
