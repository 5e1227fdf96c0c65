"""Ways to divide a ratings table into training and validation rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def random_split(n_rows: int, valid_pct: float = 0.2, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row positions for a random train/valid split.

    The same recipe as fastai's ``RandomSplitter``: ``torch.randperm`` seeded with
    ``seed``, the first ``int(valid_pct * n_rows)`` positions go to validation.
    With the same seed, the split is the one fastai makes.

    Returns:
        ``(train_idx, valid_idx)`` as int64 arrays.
    """
    if not 0.0 <= valid_pct < 1.0:
        raise ValueError(f"valid_pct must be in [0, 1), got {valid_pct}")
    if n_rows < 1:
        raise ValueError(f"cannot split {n_rows} rows")
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
        raise ValueError(f"k must be between 2 and the number of rows ({n_rows}), got {k}")
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
        raise ValueError("give exactly one of n (ratings per user) or frac (share per user)")
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if frac is not None and not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1), got {frac}")
    users = np.asarray(users)
    rows = np.arange(len(users))
    key = np.asarray(times) if times is not None else np.random.default_rng(seed).random(len(users))
    codes = pd.factorize(users)[0]
    order = np.lexsort((rows, key, codes))  # by user, then time (or random), then row
    codes = codes[order]
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - starts[codes]  # position within the user's sorted ratings
    per_user = np.full(len(counts), n) if n is not None else np.floor(frac * counts).astype(int)
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
            raise ValueError(f"valid_pct must be in (0, 1), got {valid_pct}")
        cut = np.quantile(times, 1.0 - valid_pct, method="higher")
    test = times >= cut
    return np.flatnonzero(~test), np.flatnonzero(test)
