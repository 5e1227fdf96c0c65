"""Check a ratings table before anything is learned from it.

:func:`validate_ratings` is the single gate every table passes through
(DataFrame, CSV or Parquet). It returns a clean three-column frame
``user, item, rating`` (plus any extra columns asked for) or raises
:class:`~collabkit.errors.DataError` with a message that names the problem.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from collabkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Duplicates = Literal["error", "mean", "last", "keep"]
DUPLICATE_POLICIES: tuple[str, ...] = ("error", "mean", "last", "keep")


class RatingRangeWarning(UserWarning):
    """Ratings fall outside the model's ``y_range`` and can never be predicted."""


LINE_OFFSET = "line_offset"
"""The ``attrs`` key of a table read by :func:`read_ratings_file`: a row's index plus this is its line in the file."""


def _rows_preview(frame: pd.DataFrame, mask: np.ndarray | pd.Series, limit: int = 3) -> str:
    """The first rows where ``mask`` holds, as ``line 4: user=3, item=1, rating='abc'`` (``row`` for a table
    that did not come from a file), with plain Python values: no ``np.float64(...)``, and an empty cell said so."""
    rows = frame[np.asarray(mask)].head(limit)
    offset = frame.attrs.get(LINE_OFFSET)
    if offset is None:  # not from a file: rows by position (the index may be anything: text, dates)
        where, offset, labels = "row", 0, np.flatnonzero(np.asarray(mask))[:limit].tolist()
    else:
        where, labels = "line", [int(i) for i in rows.index]

    def cell(value) -> str:
        if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
            return "(empty)"
        return repr(value.item() if isinstance(value, np.generic) else value)

    return "; ".join(
        f"{where} {idx + offset}: " + ", ".join(f"{col}={cell(value)}" for col, value in zip(rows.columns, values))
        for idx, values in zip(labels, rows.itertuples(index=False, name=None))
    )


def _resolve_column(frame: pd.DataFrame, name: str | None, position: int, role: str) -> str:
    columns = list(frame.columns)
    if name is None:
        if len(columns) <= position:
            raise DataError(
                f"no {role} column given and the table has only {len(columns)} column(s) "
                f"{columns}; the {role} column defaults to column {position + 1}"
            )
        return columns[position]
    if name not in frame.columns:
        raise DataError(f"{role} column {name!r} not found; the table has columns {columns}")
    return name


def _clean_ids(values: pd.Series, role: str, line_offset: int | None = None) -> pd.Series:
    """The ids of one column, checked (none missing) and typed; ``line_offset``: the rows came from a file
    (see :data:`LINE_OFFSET`), so a missing id is named by its line."""
    if values.isna().any():
        n = int(values.isna().sum())
        if line_offset is None:  # rows by position (the index may be anything)
            where, first = "row(s)", np.flatnonzero(values.isna().to_numpy())[:3].tolist()
        else:
            where, first = "line(s)", [int(i) + line_offset for i in values.index[values.isna()][:3]]
        raise DataError(f"{n} row(s) have a missing {role} id, e.g. at {where} {first}")
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_string_dtype(values):
        return values
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        return values.astype(np.int64)  # ids read as floats (e.g. 1.0) are ints really
    return values.astype(str)


def validate_ratings(
    frame: pd.DataFrame,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    duplicates: Duplicates = "error",
    keep_columns: tuple[str, ...] = (),
    min_ids: int = 2,
) -> pd.DataFrame:
    """Check a ratings table and return it as columns ``user_col, item_col, rating_col``.

    Args:
        frame: one row per rating.
        user_col, item_col, rating_col: column names; ``None`` takes the first,
            second and third column (fastai's convention).
        duplicates: what to do with repeated (user, item) pairs: ``"error"``
            (default), ``"mean"`` (average them), ``"last"`` (keep the last row)
            or ``"keep"`` (keep every row as its own sample, as fastai does).
        keep_columns: extra columns to carry along (e.g. a title), if present.
        min_ids: the fewest distinct users and items accepted (a validation
            split may hold a single user; a training table needs two).

    Returns:
        A new frame with the three columns first, ratings as float32 and a
        fresh 0..n-1 index.

    Raises:
        DataError: empty table, missing column, missing ids, NaN/inf or
            non-numeric ratings, duplicates under ``"error"``, fewer than
            ``min_ids`` distinct users or items.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"ratings must be a pandas DataFrame, got {type(frame).__name__}")
    if duplicates not in DUPLICATE_POLICIES:
        raise ConfigError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    if len(frame) == 0:
        raise DataError("the ratings table is empty: it has no rows")
    user_col = _resolve_column(frame, user_col, 0, "user")
    item_col = _resolve_column(frame, item_col, 1, "item")
    rating_col = _resolve_column(frame, rating_col, 2, "rating")
    if len({user_col, item_col, rating_col}) < 3:
        raise DataError(f"user, item and rating columns must differ, got {user_col!r}, {item_col!r}, {rating_col!r}")

    extra = [c for c in keep_columns if c in frame.columns and c not in (user_col, item_col, rating_col)]
    out = frame[[user_col, item_col, rating_col, *extra]].copy()  # the index (a file's lines) names bad rows

    raw = out[rating_col]
    numeric = pd.to_numeric(raw, errors="coerce")
    bad_type = numeric.isna() & raw.notna()
    if bad_type.any():
        raise DataError(
            f"{int(bad_type.sum())} non-numeric rating(s) in column {rating_col!r}; first: "
            + _rows_preview(out, bad_type)
        )
    values = numeric.to_numpy(dtype=np.float64)
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        raise DataError(
            f"{int(not_finite.sum())} rating(s) are NaN or infinite in column {rating_col!r}; first: "
            + _rows_preview(out, not_finite)
        )
    too_big = np.abs(values) > np.finfo(np.float32).max
    if too_big.any():
        raise DataError(
            f"{int(too_big.sum())} rating(s) in column {rating_col!r} are beyond ±3.4e38, too large to be ratings; "
            "first: " + _rows_preview(out, too_big)
        )
    out[rating_col] = values.astype(np.float32)
    line_offset = frame.attrs.get(LINE_OFFSET)
    out[user_col] = _clean_ids(out[user_col], "user", line_offset)
    out[item_col] = _clean_ids(out[item_col], "item", line_offset)

    pair = [user_col, item_col]
    repeated = out.duplicated(pair, keep=False)
    if repeated.any():
        n_pairs = int(out[repeated].groupby(pair, sort=False).ngroups)
        if duplicates == "error":
            raise DataError(
                f"{n_pairs} (user, item) pair(s) appear more than once ({int(repeated.sum())} rows); first: "
                + _rows_preview(out, repeated)
                + ". Pass duplicates='mean' to average them, 'last' to keep the last, or 'keep' to keep all rows"
            )
        if duplicates == "mean":
            agg = {rating_col: "mean", **{c: "first" for c in extra}}
            out = out.groupby(pair, sort=False, as_index=False).agg(agg)
            out[rating_col] = out[rating_col].astype(np.float32)
        elif duplicates == "last":
            out = out.drop_duplicates(pair, keep="last")
        if duplicates == "keep":
            log.warning(
                "%d rows share a (user, item) pair with another row; they are kept as separate samples "
                "(duplicates='keep', as fastai does). Pass duplicates='mean' to average them",
                int(repeated.sum()),
            )
        else:
            log.info("%d (user, item) pairs were repeated; duplicates=%r", n_pairs, duplicates)

    for col, role in ((user_col, "user"), (item_col, "item")):
        n = out[col].nunique()
        if n < min_ids:
            raise DataError(f"collaborative filtering needs at least {min_ids} distinct {role}s; column {col!r} has {n}")
    return out.reset_index(drop=True)


def check_rating_scale(ratings: np.ndarray, column: str) -> None:
    """Refuse a rating column that cannot hold ratings: values past a million (a timestamp or an id column
    taken for the ratings), or a value far outside all the others (a typo such as 500 among 1-5 stars,
    which would stretch the default y_range to 550).

    Raises:
        DataError: naming the column, the value and what to do.
    """
    ratings = np.asarray(ratings, dtype=np.float64)
    if len(ratings) == 0:
        return
    biggest = float(np.abs(ratings).max())
    if biggest > 1e6:
        raise DataError(
            f"column {column!r} holds values up to {biggest:.4g}: that looks like a timestamp or an id, not a "
            "rating; name the rating column with --rating-col (rating_col=)"
        )
    low, high = np.quantile(ratings, [0.01, 0.99])
    reach = 10 * max(float(high - low), 1.0)
    far = (ratings > high + reach) | (ratings < low - reach)
    if far.any():
        value = float(ratings[far][0])
        raise DataError(
            f"{int(far.sum())} rating(s) in column {column!r} lie far outside the rest (e.g. {value:g}, while 98% "
            f"lie within {low:g}..{high:g}): a typo? Fix or drop those rows"
        )


def check_y_range(ratings: np.ndarray, y_range: tuple[float, float] | None) -> None:
    """Warn (``RatingRangeWarning``) when ratings fall outside ``y_range``."""
    if y_range is None or len(ratings) == 0:
        return
    low, high = float(y_range[0]), float(y_range[1])
    if low >= high:
        raise ConfigError(f"y_range must be (low, high) with low < high, got {y_range}")
    outside = (ratings < low) | (ratings > high)
    if outside.any():
        warnings.warn(
            f"{int(outside.sum())} rating(s) lie outside y_range={y_range} "
            f"(ratings span {float(ratings.min())}..{float(ratings.max())}); the model cannot predict them",
            RatingRangeWarning,
            stacklevel=4,
        )


def read_ratings_file(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV (or other delimited text) or Parquet file of ratings.

    The format is chosen by the suffix: ``.parquet``/``.pq`` is Parquet, anything
    else is delimited text with a header row (``sep=None`` sniffs the delimiter
    for ``.tsv``/``.txt``/``.dat``, and uses commas for ``.csv``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ratings file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise DataError("reading Parquet needs pyarrow: pip install 'collabkit[parquet]'") from exc
        except Exception as exc:  # pyarrow raises its own types for corrupt files
            raise DataError(f"cannot read Parquet file {str(path)!r}: {exc}") from exc
    if sep is None and suffix == ".csv":
        sep = ","
    try:
        frame = pd.read_csv(path, sep=sep, engine="python" if sep is None else "c", dtype=str, skip_blank_lines=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot parse ratings file {str(path)!r}: {exc}") from exc
    frame = frame.dropna(how="all")  # blank lines: dropped, but their index stays counted, as their lines
    _check_separator(frame, path, sep)
    if len(frame.columns) and all(_NUMBER.fullmatch(str(c).strip()) for c in frame.columns):
        raise DataError(
            f"the first line of {str(path)!r} is all numbers ({', '.join(map(str, frame.columns[:3]))}, ...): it looks "
            "like a rating, not a header, and would be lost as one; add a header line such as user,item,rating"
        )
    typed = frame.apply(_typed_column)
    typed.attrs[LINE_OFFSET] = 2  # the header is line 1, the row with index 0 line 2
    return typed


def _check_separator(frame: pd.DataFrame, path: Path, sep: str | None) -> None:
    """Refuse a file read as one column whose header holds another common separator."""
    if len(frame.columns) != 1:
        return
    header = str(frame.columns[0])
    for other, name in ((";", "semicolon"), ("\t", "tab"), ("|", "'|'"), (",", "comma")):
        if other != sep and other in header:
            said = "comma" if sep == "," else repr(sep)
            raise DataError(
                f"{str(path)!r} may not be {said}-separated: read so, it has one column, {header!r}; it looks "
                f"{name}-separated, so pass --sep {other!r} (sep={other!r})"
            )


_INTEGER = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_NUMBER = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _typed_column(column: pd.Series) -> pd.Series:
    """A text column as ints or floats when every value is written as one in ASCII digits, else as text.

    A column is typed once, as a whole: with any leading zero ("007") or any other kind of digit ("١", "³")
    it stays text, so "007" and "7" remain two ids, and "١" is not user 1.
    """
    text = column.dropna().str.strip()
    if len(text) == 0:
        return column
    if text.str.fullmatch(_INTEGER.pattern).all() and not column.isna().any():
        try:
            return text.astype(np.int64)
        except OverflowError:  # ids past 2**63 stay text
            return column
    if text.str.fullmatch(_NUMBER.pattern).all():
        return pd.to_numeric(column.str.strip())
    return column
