"""Ways to divide a ratings table into training and validation rows, and :class:`SplitSpec`, the record of
which one a model was trained with (saved in its info, replayed by ``evaluate``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from collabkit.errors import ConfigError, DataError

SPLIT_KINDS = ("random", "temporal", "user-last", "user-random")
"""Splits made from the table itself: by rows at random, by time, or per user (the latest or random ratings)."""
ML_100K_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
"""ML-100K's canonical splits: files shipped with the dataset (see :func:`collabkit.datasets.split_dataset`)."""


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """Which rows train and which are held out: a split named once, saved with the model, replayed exactly.

    Args:
        kind: ``"random"`` (``valid_pct`` of rows, the lesson's), ``"temporal"``
            (the latest ``valid_pct`` by the ``timestamp`` column), ``"user-last"``
            / ``"user-random"`` (``holdout`` ratings per user: the latest, or at
            random), or one of ML-100K's canonical files ``u1``..``u5``, ``ua``, ``ub``.
        valid_pct: the share held out by ``random`` and ``temporal``; 0 holds nothing out.
        holdout: ratings held out per user by the ``user-*`` kinds.
        seed: the seed of the random kinds.
    """

    kind: str = "random"
    valid_pct: float = 0.2
    holdout: int = 1
    seed: int = 42

    def __post_init__(self) -> None:
        if self.kind not in (*SPLIT_KINDS, *ML_100K_SPLITS):
            raise ConfigError(f"split must be one of {(*SPLIT_KINDS, *ML_100K_SPLITS)}, got {self.kind!r}")
        if not (isinstance(self.valid_pct, int | float) and math.isfinite(self.valid_pct) and 0 <= self.valid_pct < 1):
            raise ConfigError(f"valid_pct must be between 0 and 1 (0 trains on everything, with no validation), "
                             f"got {self.valid_pct!r}")
        if not (isinstance(self.holdout, int) and self.holdout >= 1):
            raise ConfigError(f"holdout must be a positive integer, got {self.holdout!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    @property
    def canonical(self) -> bool:
        """Whether the split is one of ML-100K's files rather than made from the table."""
        return self.kind in ML_100K_SPLITS

    def indices(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(train_rows, held_out_rows)``, positions in ``table`` (user column first; a ``timestamp`` column
        for the kinds that go by time)."""
        if self.canonical:
            raise ConfigError(f"split {self.kind} is a file of ML-100K, not made from a table: use "
                             "collabkit.datasets.split_dataset")
        n = len(table)
        if self.kind == "random":
            return random_split(n, self.valid_pct, self.seed)
        if self.kind == "temporal":
            if self.valid_pct == 0:
                return np.arange(n), np.zeros(0, dtype=np.int64)
            return temporal_split(self._times(table), self.valid_pct)
        times = self._times(table) if self.kind == "user-last" else None
        return user_holdout(table.iloc[:, 0].to_numpy(), n=self.holdout, times=times, seed=self.seed)

    def _times(self, table: pd.DataFrame) -> np.ndarray:
        if "timestamp" not in table.columns:
            raise DataError(f"the {self.kind} split needs a 'timestamp' column; the table has {list(table.columns)}")
        return table["timestamp"].to_numpy()

    def record(self) -> dict[str, Any]:
        """The split as a model's info holds it (the CLI's option names)."""
        return {"split": self.kind, "valid_pct": self.valid_pct, "holdout": self.holdout, "seed": self.seed}

    @classmethod
    def from_record(cls, info: Mapping[str, Any], **overrides: Any) -> SplitSpec:
        """The split recorded in a model's ``info`` (unrecorded fields: the defaults), with ``overrides``
        (``None`` values ignored) on top. Models saved before splits were recorded kept only the seed,
        in ``info["config"]``."""
        recorded = {"kind": info.get("split"), "valid_pct": info.get("valid_pct"), "holdout": info.get("holdout"),
                    "seed": info.get("seed", (info.get("config") or {}).get("seed"))}
        fields = {k: v for k, v in recorded.items() if v is not None}
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)


def random_split(n_rows: int, valid_pct: float = 0.2, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row positions for a random train/valid split.

    The same recipe as fastai's ``RandomSplitter``: ``torch.randperm`` seeded with
    ``seed``, the first ``int(valid_pct * n_rows)`` positions go to validation.
    With the same seed, the split is the one fastai makes.

    Returns:
        ``(train_idx, valid_idx)`` as int64 arrays.
    """
    if not 0.0 <= valid_pct < 1.0:
        raise ConfigError(f"valid_pct must be in [0, 1), got {valid_pct}")
    if n_rows < 1:
        raise ConfigError(f"cannot split {n_rows} rows")
    order = torch.randperm(n_rows, generator=torch_generator(seed)).numpy()
    cut = int(valid_pct * n_rows)
    return order[cut:], order[:cut]


def torch_generator(seed: int | None) -> torch.Generator:
    """A torch random generator seeded with ``seed`` (``None``: from the operating system's entropy)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def kfold(n_rows: int, k: int = 5, seed: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds of a random permutation: each row is in exactly one test fold.

    Returns:
        ``[(train_idx, test_idx), ...]`` as sorted int64 arrays.
    """
    if k < 2 or k > n_rows:
        raise ConfigError(f"k must be between 2 and the number of rows ({n_rows}), got {k}")
    order = np.random.default_rng(seed).permutation(n_rows)
    folds = np.array_split(order, k)
    return [
        (np.sort(np.concatenate(folds[:f] + folds[f + 1 :])), np.sort(folds[f]))
        for f in range(k)
    ]


def user_holdout(
    users: np.ndarray,
    n: int | None = None,
    frac: float | None = None,
    times: np.ndarray | None = None,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ratings per user: the last ``n`` by time, or ``n`` (or a ``frac``) at random.

    With ``times`` given, each user's most recent ratings are held out (ties
    broken by row order); without, a random choice. Every user keeps at least
    one training rating: a user with ``c`` ratings gives at most ``c - 1``.

    Returns:
        ``(train_idx, test_idx)`` as sorted int64 arrays.
    """
    if (n is None) == (frac is None):
        raise ConfigError("give exactly one of n (ratings per user) or frac (share per user)")
    if n is not None and n < 1:
        raise ConfigError(f"n must be a positive integer, got {n}")
    if frac is not None and not 0.0 < frac < 1.0:
        raise ConfigError(f"frac must be in (0, 1), got {frac}")
    users = np.asarray(users)
    rows = np.arange(len(users))
    key = np.asarray(times) if times is not None else np.random.default_rng(seed).random(len(users))
    codes = pd.factorize(users)[0]
    order = np.lexsort((rows, key, codes))  # by user, then time (or random), then row
    codes = codes[order]
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - starts[codes]  # position within the user's sorted ratings
    if n is not None:
        per_user = np.full(len(counts), n)
    else:
        assert frac is not None  # (exactly one of n and frac was given: checked above)
        per_user = np.floor(frac * counts).astype(int)
    held = np.minimum(per_user, counts - 1)
    is_test = rank >= (counts - held)[codes]
    return np.sort(order[~is_test]), np.sort(order[is_test])


def temporal_split(times: np.ndarray, valid_pct: float = 0.2, cut: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Everything before a moment trains, everything from it on tests.

    The moment is ``cut`` (same units as ``times``) or, by default, the time
    that leaves the latest ``valid_pct`` of ratings for testing.
    """
    times = np.asarray(times)
    if cut is None:
        if not 0.0 < valid_pct < 1.0:
            raise ConfigError(f"valid_pct must be in (0, 1), got {valid_pct}")
        cut = np.quantile(times, 1.0 - valid_pct, method="higher")
    test = times >= cut
    return np.flatnonzero(~test), np.flatnonzero(test)
