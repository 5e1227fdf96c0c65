"""Named datasets: the bundled MovieLens sample and MovieLens 100K from a local folder.

======================  =========================================================
name                    where it comes from
======================  =========================================================
``ml-latest-small``     bundled with collabkit (its license allows redistribution)
``ml-100k``             a local folder: ``data_dir``, or ``$COLLABKIT_DATA_DIR``;
                        its license forbids redistribution, so it is never bundled
======================  =========================================================

Every loader returns a :class:`Dataset`: the ratings as a DataFrame plus the
names of its user, item and rating columns and a title for each item.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from collabkit.errors import DatasetNotFoundError

log = logging.getLogger(__name__)

DATA_DIR_ENV = "COLLABKIT_DATA_DIR"
"""Environment variable naming a folder that holds ``ml-100k/`` (or is that folder)."""

ML_100K_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
_ML_100K_COLUMNS = ["user", "movie", "rating", "timestamp"]


@dataclass(frozen=True)
class Dataset:
    """A ratings table with the names of its columns and the items' titles."""

    name: str
    ratings: pd.DataFrame
    user_col: str
    item_col: str
    rating_col: str
    titles: pd.Series  # item id -> title

    def with_titles(self) -> pd.DataFrame:
        """The ratings with a ``title`` column joined on (the lesson's ``ratings.merge(movies)``)."""
        return self.ratings.merge(self.titles.rename("title"), left_on=self.item_col, right_index=True, how="left")


def bundled_path(name: str = "ml-latest-small") -> Path:
    """The folder of a dataset shipped inside the package."""
    return Path(str(resources.files("collabkit") / "_bundled" / name))


def load_ml_latest_small() -> Dataset:
    """MovieLens "latest small" (2018): 100,836 ratings, 610 users, 9,742 movies, 0.5-5 stars."""
    folder = bundled_path("ml-latest-small")
    ratings = pd.read_csv(folder / "ratings.csv")
    movies = pd.read_csv(folder / "movies.csv")
    titles = movies.set_index("movieId")["title"]
    return Dataset("ml-latest-small", ratings, "userId", "movieId", "rating", titles)


def find_ml_100k(data_dir: str | Path | None = None) -> Path:
    """The ml-100k folder: ``data_dir`` or ``$COLLABKIT_DATA_DIR``, either the folder itself or its parent."""
    given = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not given:
        raise DatasetNotFoundError(
            "ml-100k is not bundled (its license forbids redistribution); pass --data-dir PATH "
            f"(the folder holding u.data, or its parent) or set {DATA_DIR_ENV}"
        )
    base = Path(given).expanduser()
    for folder in (base, base / "ml-100k"):
        if (folder / "u.data").is_file():
            return folder
    raise DatasetNotFoundError(f"no ml-100k u.data found in {str(base)!r} or {str(base / 'ml-100k')!r}")


def _read_ml_100k_titles(folder: Path) -> pd.Series:
    items = pd.read_csv(
        folder / "u.item", sep="|", encoding="latin-1", header=None, usecols=(0, 1), names=("movie", "title")
    )
    return items.set_index("movie")["title"]


def _read_ml_100k_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, names=_ML_100K_COLUMNS)


def load_ml_100k(data_dir: str | Path | None = None) -> Dataset:
    """MovieLens 100K (``u.data`` and the titles of ``u.item``), with the lesson's column names."""
    folder = find_ml_100k(data_dir)
    ratings = _read_ml_100k_table(folder / "u.data")
    return Dataset("ml-100k", ratings, "user", "movie", "rating", _read_ml_100k_titles(folder))


def load_ml_100k_split(split: str = "u1", data_dir: str | Path | None = None) -> tuple[Dataset, Dataset]:
    """One of the canonical ML-100K splits (``u1``..``u5``, ``ua``, ``ub``) as ``(base, test)``."""
    if split not in ML_100K_SPLITS:
        raise ValueError(f"split must be one of {ML_100K_SPLITS}, got {split!r}")
    folder = find_ml_100k(data_dir)
    titles = _read_ml_100k_titles(folder)
    parts = []
    for suffix in ("base", "test"):
        path = folder / f"{split}.{suffix}"
        if not path.is_file():
            raise DatasetNotFoundError(f"split file {str(path)!r} is missing")
        parts.append(Dataset(f"ml-100k/{split}.{suffix}", _read_ml_100k_table(path), "user", "movie", "rating", titles))
    return parts[0], parts[1]


DATASETS = {"ml-latest-small": "bundled", "ml-100k": "local folder (--data-dir or $COLLABKIT_DATA_DIR)"}


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a dataset by name (see :data:`DATASETS`)."""
    if name == "ml-latest-small":
        return load_ml_latest_small()
    if name == "ml-100k":
        return load_ml_100k(data_dir)
    raise DatasetNotFoundError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
