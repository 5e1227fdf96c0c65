"""Raw ids <-> contiguous indices.

A :class:`Vocabulary` maps the ids found in a ratings table (ints or strings)
to the rows of an embedding table, ``0 .. len(vocab) - 1``. There is no hidden
"unknown" row: an id that is not in the vocabulary is reported as such by
:meth:`Vocabulary.index`, and the caller decides what to do with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import pandas as pd

from collabkit.errors import DataError, UnknownIdError

UNKNOWN = -1
"""Index returned by :meth:`Vocabulary.index` for ids not in the vocabulary."""
SMALL = 64
"""Up to this many ids, :meth:`Vocabulary.index` looks them up one by one in a dict."""


_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")


def _native(value: Any) -> Any:
    """Turn numpy scalars into plain Python values (for JSON and display)."""
    return value.item() if isinstance(value, np.generic) else value


class Vocabulary(Sequence):
    """An ordered, immutable set of raw ids.

    It behaves like fastai's ``CategoryMap``: ``vocab[i]`` is the raw id of row
    ``i``, ``len(vocab)`` is the number of rows and ``vocab.o2i`` maps raw ids
    to rows. Vectorised lookups go through :meth:`index`.

    Args:
        ids: the distinct raw ids, in row order. Use :meth:`from_values` to
            build a vocabulary from a column that may hold repeats.
        name: what the ids are ("user", "item", "title"); used in messages.
    """

    def __init__(self, ids: Iterable[Any], name: str = "id") -> None:
        index = pd.Index(list(ids) if not isinstance(ids, (pd.Index, np.ndarray)) else ids)
        if index.has_duplicates:
            dupes = index[index.duplicated()].unique()[:5].tolist()
            raise DataError(f"{name} vocabulary has repeated ids, e.g. {dupes}")
        self._index = index
        self.name = name
        self._o2i: dict[Any, int] | None = None

    @classmethod
    def from_values(cls, values: Iterable[Any], name: str = "id") -> Vocabulary:
        """The sorted distinct values of a column (fastai sorts its classes too)."""
        uniques = pd.unique(pd.Series(values))
        return cls(np.sort(uniques) if len(uniques) else uniques, name=name)

    # --- Sequence protocol -------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [_native(v) for v in self._index[i]]
        return _native(self._index[int(i)])

    def __iter__(self) -> Iterator[Any]:
        return (_native(v) for v in self._index)

    def __contains__(self, value: object) -> bool:
        return value in self._index

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self[:5])
        more = ", ..." if len(self) > 5 else ""
        return f"Vocabulary({self.name!r}, {len(self)} ids: [{head}{more}])"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._index.equals(other._index)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container semantics, like list

    # --- lookups -----------------------------------------------------------
    @property
    def o2i(self) -> dict[Any, int]:
        """Raw id -> row, as a dict (fastai's ``CategoryMap.o2i``)."""
        if self._o2i is None:
            self._o2i = {_native(v): i for i, v in enumerate(self._index)}
        return self._o2i

    @property
    def ids(self) -> np.ndarray:
        """The raw ids as a numpy array, in row order."""
        return self._index.to_numpy()

    @overload  # type: ignore[override]  # (one id: its row, as Sequence.index; many: an array)
    def index(self, values: str | int) -> int: ...

    @overload
    def index(self, values: Iterable[Any]) -> np.ndarray: ...

    def index(self, values: Iterable[Any] | str | int) -> np.ndarray | int:
        """Rows of ``values`` as an int64 array; ids not in the vocabulary give ``UNKNOWN``.

        One id (a string or a number, not a list) gives its row as an ``int``, as ``Sequence.index``
        does, and one that is not here raises :class:`UnknownIdError` (``vocab.index("Heat")`` used to
        look up "H", "e", "a", "t").
        """
        if isinstance(values, (str, bytes, int, float, np.integer, np.floating)):
            return int(self.index_strict([values])[0])
        values = values if isinstance(values, (pd.Index, pd.Series, np.ndarray)) else list(values)
        if len(values) <= SMALL:  # a dict lookup beats building a pandas Index for a handful of ids
            o2i = self.o2i
            return np.fromiter((o2i.get(_native(v), UNKNOWN) for v in values), dtype=np.int64, count=len(values))
        return self._index.get_indexer(pd.Index(values)).astype(np.int64)

    def index_strict(self, values: Iterable[Any]) -> np.ndarray:
        """Like :meth:`index`, but an unknown id raises :class:`UnknownIdError` naming it."""
        values = values if isinstance(values, (pd.Index, pd.Series, np.ndarray)) else list(values)
        rows = self.index(values)
        missing = np.asarray(rows == UNKNOWN)
        if missing.any():
            bad = pd.unique(np.asarray(values, dtype=object)[missing])
            shown = ", ".join(repr(_native(v)) for v in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise UnknownIdError(f"unknown {self.name} id(s): {shown}{more}")
        return rows

    def parse(self, values: Iterable[Any]) -> Sequence[Any] | np.ndarray:
        """Text ids (from a command line or a URL) as the vocabulary's type: ``"42"`` -> ``42`` for int ids.

        A typed array (or Series) of numbers is returned as an array as it is: it has no text to parse,
        and looking it up stays vectorised.
        """
        if isinstance(values, (np.ndarray, pd.Series, pd.Index)) and values.dtype.kind in "iuf":
            return np.asarray(values)
        values = list(values)
        if not pd.api.types.is_integer_dtype(self._index.dtype):
            return values
        parsed = []
        for v in values:
            if isinstance(v, str) and _ASCII_INTEGER.fullmatch(v.strip()):  # not "١" or "³": str.isdigit takes those
                v = int(v)
            parsed.append(v)
        return parsed

    # --- persistence -------------------------------------------------------
    def to_list(self) -> list[Any]:
        """The raw ids as plain Python values (ints or strings), for JSON."""
        return list(self)
