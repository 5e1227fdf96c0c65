"""The catalogue of a trained model: the vocabularies, titles and history that give its rows meaning.

A :class:`Catalogue` answers the questions about ids that every use of a model
asks first: the row of a raw id or a title (with "did you mean" for a miss),
which rows were trained, title search, and the table of items at some rows. A
:class:`~collabkit.recommend.Recommender` holds one beside its models; it knows
nothing of the models.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from collabkit.data.history import RatingHistory
from collabkit.data.vocab import UNKNOWN, Vocabulary
from collabkit.errors import ConfigError, DataError, UnknownIdError

HINT_TITLES = 2000
"""How many of the most-rated titles a "did you mean" compares a mistyped title with."""
HINT_CHECKS = 8
"""How many distinct unknown texts of one call are checked for a mistyped title."""


class Catalogue:
    """The user and item vocabularies, a title per item row (or ``None``), and the rating history (who rated
    what, which rows were trained; ``None`` when unknown, and then every row counts as trained)."""

    def __init__(self, users: Vocabulary, items: Vocabulary, titles: Sequence[str | None] | None = None,
                 history: RatingHistory | None = None) -> None:
        self.users, self.items = users, items
        self.titles = list(titles) if titles is not None else None
        self.history = history

    @property
    def user_trained(self) -> np.ndarray:
        return self.history.user_trained if self.history is not None else np.ones(len(self.users), dtype=bool)

    @property
    def item_trained(self) -> np.ndarray:
        return self.history.item_trained if self.history is not None else np.ones(len(self.items), dtype=bool)

    @functools.cached_property
    def trained_item_rows(self) -> np.ndarray:
        """The rows of the items the model trained on: the candidates of top-N lists, and what interpret plots."""
        return np.flatnonzero(self.item_trained)

    def trained_user_rows(self, users: Sequence[Any]) -> np.ndarray:
        """Rows of trained user ids; raises naming ids that are unknown or only in the validation split."""
        values = self.users.parse(users)
        rows = self.users.index(values)
        untrained = (rows != UNKNOWN) & ~self.user_trained[np.where(rows == UNKNOWN, 0, rows)]
        if (rows == UNKNOWN).any():
            self.users.index_strict(values)  # raises, naming the unknown ids
        if untrained.any():
            bad = ", ".join(repr(v) for v in pd.unique(np.asarray(values, dtype=object)[untrained])[:5])
            raise UnknownIdError(
                f"user id(s) {bad} appear only in the validation split: the model never trained on them"
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
        return int(self.trained_item_rows_of([item])[0])

    def trained_item_rows_of(self, items: Sequence[Any]) -> np.ndarray:
        """Rows of items by raw id or title, all at once; the first that is unknown or untrained
        raises an :class:`UnknownIdError` naming it (with the closest titles for a miss)."""
        rows = self.item_rows(items)
        bad = np.flatnonzero((rows == UNKNOWN) | ~self.item_trained[np.maximum(rows, 0)])
        if len(bad):
            item = items[bad[0]]
            if rows[bad[0]] != UNKNOWN:
                raise UnknownIdError(f"item {item!r} appears only in the validation split: the model never trained on it")
            raise UnknownIdError(f"unknown item id or title {item!r}{self.title_hint(str(item), 0.5)}")
        return rows

    def item_rows(self, items: Sequence[Any]) -> np.ndarray:
        """Rows of items given by raw id or title; ``UNKNOWN`` where neither matches. A string that
        is not an id is looked up as a title, even one that parses as a number ("1917")."""
        rows = self.items.index(self.items.parse(items))
        if self.titles is not None:
            for k in np.flatnonzero(rows == UNKNOWN):
                if isinstance(items[int(k)], str):
                    rows[k] = self._title_rows.get(items[int(k)], UNKNOWN)
        return rows

    def no_mistyped_titles(self, items: Sequence[Any], rows: np.ndarray) -> None:
        """A text item that is neither an id nor a title, but is close to a title, was meant as one: raise
        with suggestions instead of predicting for the average item (an unknown *id* keeps that fallback).

        Each "did you mean" costs milliseconds (difflib), so only the first :data:`HINT_CHECKS` distinct unknown
        texts of a call are compared with the titles; with int ids the first one raises at once."""
        if self.titles is None:
            return
        numeric_ids = pd.api.types.is_integer_dtype(self.items.ids.dtype)
        texts = dict.fromkeys(items[int(k)] for k in np.flatnonzero(rows == UNKNOWN) if isinstance(items[int(k)], str))
        for item in list(texts)[:HINT_CHECKS]:
            if numeric_ids and self.items.parse([item])[0] != item:
                continue
            hint = self.title_hint(item, 0.6)
            if numeric_ids or hint:
                raise UnknownIdError(f"unknown item title {item!r}{hint}")

    @functools.cached_property
    def _hint_titles(self) -> list[str]:
        """The titles "did you mean" looks among: every title, or the :data:`HINT_TITLES` most-rated of a larger
        catalogue (difflib compares with each, which took 0.2-0.6 s per query over 60,000 titles)."""
        titles = list(self._title_rows)
        if len(titles) <= HINT_TITLES or self.history is None:
            return titles
        rows = np.argsort(-self.history.item_counts, kind="stable")[:HINT_TITLES]
        return [str(self.titles[r]) for r in rows.tolist() if self.titles is not None and self.titles[r] is not None]

    def close_titles(self, text: str, n: int, cutoff: float) -> list[str]:
        """The ``n`` titles closest to ``text`` by :func:`difflib.get_close_matches` (the "did you mean" rule)."""
        return difflib.get_close_matches(text, self._hint_titles, n=n, cutoff=cutoff)

    def title_hint(self, text: str, cutoff: float) -> str:
        """``"; did you mean 'A', 'B'?"`` with the titles closest to ``text`` (``""`` when none is that close)."""
        close = self.close_titles(text, 3, cutoff)
        return f"; did you mean {', '.join(repr(t) for t in close)}?" if close else ""

    @functools.cached_property
    def _search_index(self) -> tuple[np.ndarray, list[str], dict[str, int]]:
        """Trained item rows, most-rated first; their lower-cased titles (ids as text where there are none);
        and each title's first (most-rated) position among them."""
        rows = self.trained_item_rows
        if self.history is not None:
            rows = rows[np.argsort(-self.history.item_counts[rows], kind="stable")]
        ids = self.items.ids
        names = [str(self.titles[r]) if self.titles is not None and self.titles[r] is not None else str(ids[r])
                 for r in rows.tolist()]
        position = {name: k for k, name in reversed(list(enumerate(names)))}
        return rows, [name.casefold() for name in names], position

    def search_titles(self, query: str, n: int = 10) -> pd.DataFrame:
        """Trained items whose title contains ``query``, ignoring case: titles that start with it first,
        then the most-rated (when the rating history is known). When no title contains it, the titles
        closest to it (the "did you mean" of a mistyped title). Without titles, ids are searched as text.

        Returns a DataFrame with ``item``, ``title`` (if known), ``ratings`` (training ratings, if known)
        and ``match``: ``"contains"`` or ``"close"``.
        """
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"query must be some text to look for in the titles, got {query!r}")
        if not (isinstance(n, int) and n >= 1):
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        needle = query.strip().casefold()
        rows, folded, position = self._search_index
        hits = [k for k, name in enumerate(folded) if needle in name]
        hits.sort(key=lambda k: not folded[k].startswith(needle))  # stable: most-rated first within each group
        match = "contains"
        if not hits and self.titles is not None:
            hits = [position[t] for t in self.close_titles(query.strip(), n, 0.5) if t in position]
            match = "close"
        picked = rows[np.asarray(hits[:n], dtype=np.int64)]
        frame = self.item_table(picked)
        frame["match"] = match
        return frame

    def title(self, item: Any) -> str | None:
        """The title of a raw item id, or ``None`` when titles are unknown."""
        if self.titles is None:
            return None
        return self.titles[int(self.items.index_strict(self.items.parse([item]))[0])]

    def titles_of(self, rows: np.ndarray) -> list[str | None] | None:
        return None if self.titles is None else [self.titles[r] for r in rows]

    def item_table(self, rows: np.ndarray) -> pd.DataFrame:
        """The items at ``rows`` (as :meth:`top_n` returns them): ``item``, ``title`` (if titles are known)
        and ``ratings``, their training ratings (if the rating history is known)."""
        frame = pd.DataFrame({"item": self.items.ids[rows]})
        titles = self.titles_of(rows)
        if titles is not None:
            frame["title"] = titles
        if self.history is not None:
            frame["ratings"] = self.history.item_counts[rows]
        return frame
