"""Encoded ratings as index tensors, and the batches cut from them.

The hot path of training is :class:`IndexBatches`: the (user, item) index pairs
and the ratings live in two tensors; each epoch draws one permutation and hands
out slices of it. There is no per-row ``Dataset.__getitem__`` and no collate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from collabkit import distributed
from collabkit.data.ratings import Duplicates, validate_ratings
from collabkit.data.splits import random_split, torch_generator
from collabkit.data.vocab import Vocabulary
from collabkit.errors import ConfigError

log = logging.getLogger(__name__)


class IndexBatches:
    """Mini-batches of ``(x, y)`` from index tensors.

    Args:
        x: ``(n, 2)`` integer tensor of (user row, item row); int32 where the rows fit, half int64's memory.
        y: ``(n,)`` float32 tensor of ratings.
        bs: batch size.
        shuffle: draw a new permutation each epoch (training) or keep order.
        drop_last: drop a final short batch (fastai does this for training).
        generator: the random source for shuffling; ``None`` uses torch's global one.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bs: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] != y.shape[0]:
            raise ConfigError(f"x must be (n, 2) and y (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
        if bs < 1:
            raise ConfigError(f"bs (batch size) must be a positive integer, got {bs}")
        self.x, self.y = x, y
        self.bs, self.shuffle, self.drop_last = int(bs), shuffle, drop_last
        self.generator = generator
        self.rank, self.world = 0, 1

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.x.shape[0])

    @property
    def sharded(self) -> bool:
        return self.world > 1

    def shard(self, rank: int, world: int) -> IndexBatches:
        """Make this process one of ``world`` (in place; returns self).

        Shuffled batches stay global: every rank draws the same permutation and
        takes its ``bs // world`` slice of each batch of ``bs``, so together the
        ranks see exactly the batches one process would. Unshuffled rows are
        split into ``world`` contiguous parts.
        """
        if not 0 <= rank < world:
            raise ConfigError(f"rank must be in [0, {world}), got {rank}")
        if world > 1 and self.shuffle and self.bs % world:
            raise ConfigError(f"the batch size {self.bs} must divide evenly among {world} processes")
        if world > 1 and self.shuffle and self.generator is None:
            raise ConfigError("sharded shuffling needs a seeded generator, so that every rank draws the same order")
        self.rank, self.world = rank, world
        return self

    def _own_rows(self) -> tuple[int, int]:
        """The contiguous part of an unshuffled, sharded split that this rank reads."""
        return distributed.row_range(self.n, self.rank, self.world)

    def __len__(self) -> int:
        n = self.n
        if self.sharded and not self.shuffle:
            start, stop = self._own_rows()
            n = stop - start
        full, rest = divmod(n, self.bs)
        return full if (self.drop_last or rest == 0) else full + 1

    def epoch_order(self) -> torch.Tensor | None:
        """This epoch's permutation of the rows (drawn from ``generator``), or ``None`` when unshuffled."""
        if not self.shuffle:
            return None
        return torch.randperm(self.n, generator=self.generator).to(self.x.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.x, self.y
        perm = self.epoch_order()
        if perm is None and self.sharded:
            start, stop = self._own_rows()
            x, y = x[start:stop], y[start:stop]
        stop = min(len(self) * self.bs, len(x))
        local = self.bs // self.world if perm is not None else self.bs
        offset = self.rank * local if perm is not None else 0
        for start in range(0, stop, self.bs):
            lo = start + offset
            if perm is None:
                yield x[lo : lo + local], y[lo : lo + local]
            else:  # gather batch by batch: no shuffled copy of the whole table
                rows = perm[lo : lo + local]
                yield x.index_select(0, rows), y.index_select(0, rows)

    def one_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first batch of a fresh epoch."""
        return next(iter(self))

    def to(self, device: torch.device | str) -> IndexBatches:
        """Move the tensors to ``device`` (in place); returns self."""
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self


class CollabDataLoaders:
    """Training and validation batches over one ratings table, plus its vocabularies.

    Build it with :meth:`from_df` (random split), :meth:`from_frames`
    (a split you already have) or :meth:`from_csv`.

    Attributes:
        train, valid: :class:`IndexBatches`.
        classes: ``{user_name: Vocabulary, item_name: Vocabulary}``. The
            vocabularies cover both splits, and have no hidden ``#na#`` row, so
            ``len(dls.classes[user_name])`` is the true number of users.
        user_name, item_name, rating_name: the column names used.
        n_valid_only: ``{"user": k, "item": m}``: ids seen only in validation;
            their rows are never trained (a Recommender predicts for them from the average trained user or item).
    """

    def __init__(
        self,
        train: IndexBatches,
        valid: IndexBatches,
        classes: dict[str, Vocabulary],
        user_name: str,
        item_name: str,
        rating_name: str,
        n_valid_only: dict[str, int] | None = None,
    ) -> None:
        self.train, self.valid = train, valid
        self.classes = classes
        self.user_name, self.item_name, self.rating_name = user_name, item_name, rating_name
        self.n_valid_only = n_valid_only or {"user": 0, "item": 0}

    # --- construction ---------------------------------------------------------
    @classmethod
    def from_df(
        cls,
        ratings: pd.DataFrame,
        valid_pct: float = 0.2,
        user_name: str | None = None,
        item_name: str | None = None,
        rating_name: str | None = None,
        seed: int | None = None,
        bs: int = 64,
        val_bs: int | None = None,
        duplicates: Duplicates = "error",
        device: torch.device | str | None = None,
    ) -> CollabDataLoaders:
        """Validate ``ratings``, split it at random (``valid_pct``, ``seed``) and batch it.

        Column names default to the first three columns (user, item, rating).
        The split is fastai's ``RandomSplitter`` recipe, so a seed gives the
        same rows as fastai with that seed. See :func:`validate_ratings` for
        ``duplicates``.
        """
        clean = validate_ratings(ratings, user_name, item_name, rating_name, duplicates=duplicates)
        train_idx, valid_idx = random_split(len(clean), valid_pct, seed)
        return cls._from_clean(clean.iloc[train_idx], clean.iloc[valid_idx], bs, val_bs, seed, device)

    @classmethod
    def from_frames(
        cls,
        train: pd.DataFrame,
        valid: pd.DataFrame,
        user_name: str | None = None,
        item_name: str | None = None,
        rating_name: str | None = None,
        bs: int = 64,
        val_bs: int | None = None,
        seed: int | None = None,
        duplicates: Duplicates = "error",
        device: torch.device | str | None = None,
    ) -> CollabDataLoaders:
        """Batch a train/valid split that already exists (e.g. MovieLens ``u1.base``/``u1.test``)."""
        train = validate_ratings(train, user_name, item_name, rating_name, duplicates=duplicates)
        if len(valid):
            user_col, item_col, rating_col = train.columns[:3]
            valid = validate_ratings(valid, user_col, item_col, rating_col, duplicates=duplicates, min_ids=1)
        else:
            valid = train.iloc[:0]
        return cls._from_clean(train, valid, bs, val_bs, seed, device)

    @classmethod
    def _from_clean(
        cls,
        train: pd.DataFrame,
        valid: pd.DataFrame,
        bs: int,
        val_bs: int | None,
        seed: int | None,
        device: torch.device | str | None,
    ) -> CollabDataLoaders:
        """Vocabularies, index tensors and batches from two validated frames."""
        user_name, item_name, rating_name = (str(c) for c in train.columns[:3])
        both = pd.concat([train, valid], ignore_index=True)
        users = Vocabulary.from_values(both[user_name], name=user_name)
        items = Vocabulary.from_values(both[item_name], name=item_name)
        n_valid_only = {
            "user": int(len(users) - train[user_name].nunique()),
            "item": int(len(items) - train[item_name].nunique()),
        }
        if any(n_valid_only.values()):
            log.info(
                "%d user(s) and %d item(s) appear only in validation; their embeddings stay untrained",
                n_valid_only["user"],
                n_valid_only["item"],
            )
        train_batches = IndexBatches(
            *cls._encode(train, users, items), bs=bs, shuffle=True, drop_last=True, generator=torch_generator(seed)
        )
        valid_batches = IndexBatches(*cls._encode(valid, users, items), bs=val_bs or max(bs, 4096))
        dls = cls(
            train_batches,
            valid_batches,
            {user_name: users, item_name: items},
            user_name,
            item_name,
            rating_name,
            n_valid_only,
        )
        return dls.to(device) if device is not None else dls

    @classmethod
    def from_csv(cls, csv: str, **kwargs) -> CollabDataLoaders:
        """Read ``csv`` with pandas and call :meth:`from_df` with the same keywords."""
        return cls.from_df(pd.read_csv(csv), **kwargs)

    @staticmethod
    def _encode(frame: pd.DataFrame, users: Vocabulary, items: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
        u = users.index_strict(frame.iloc[:, 0])
        i = items.index_strict(frame.iloc[:, 1])
        x = torch.from_numpy(np.stack([u, i], axis=1).astype(np.int32))  # rows fit: vocabularies are < 2**31
        y = torch.from_numpy(frame.iloc[:, 2].to_numpy(dtype=np.float32, copy=True))
        return x, y

    # --- use -----------------------------------------------------------------
    @property
    def users(self) -> Vocabulary:
        return self.classes[self.user_name]

    @property
    def items(self) -> Vocabulary:
        return self.classes[self.item_name]

    @property
    def device(self) -> torch.device:
        return self.train.x.device

    def to(self, device: torch.device | str) -> CollabDataLoaders:
        """Move both splits to ``device``; returns self."""
        self.train.to(device)
        self.valid.to(device)
        return self

    def decode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> pd.DataFrame:
        """Index pairs (and ratings) back to a frame of raw ids."""
        rows = x.detach().cpu().numpy()
        frame = pd.DataFrame(
            {
                self.user_name: self.users.ids[rows[:, 0]],
                self.item_name: self.items.ids[rows[:, 1]],
            }
        )
        if y is not None:
            frame[self.rating_name] = y.detach().cpu().numpy().reshape(-1)
        return frame

    def show_batch(self, max_n: int = 9) -> pd.DataFrame:
        """The first ``max_n`` rows of a training batch, decoded to raw ids."""
        x, y = self.train.one_batch()
        return self.decode(x[:max_n], y[:max_n])

    def __repr__(self) -> str:
        return (
            f"CollabDataLoaders({self.train.n} train / {self.valid.n} valid ratings, "
            f"{len(self.users)} {self.user_name}s, {len(self.items)} {self.item_name}s, bs={self.train.bs})"
        )
