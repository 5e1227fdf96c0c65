"""Benchmark: first parse vs. reload from the binary cache, on an ml-25m-sized copy in the real CSV format.

ml-25m cannot be downloaded here, so this writes a synthetic folder with the
same layout and size (``ratings.csv`` with 25,000,095 rows of
``userId,movieId,rating,timestamp``; ``movies.csv`` with 62,423 movies), points
collabkit at it with ``data_dir``, and times ``load_dataset("ml-25m")`` cold
(CSV parse + writing the cache) and warm (the ``.npz`` reload).

    python bench/reload_cache.py [--rows 25000095] [--workdir /tmp/ck-ml25m]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd


def write_copy(folder: Path, rows: int, n_movies: int = 62_423, n_users: int = 162_541) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    movies = pd.DataFrame({"movieId": np.arange(1, n_movies + 1)})
    movies["title"] = [f"Movie {i} ({1900 + i % 120})" for i in movies["movieId"]]
    movies["genres"] = "Drama|Comedy"
    movies.to_csv(folder / "movies.csv", index=False)
    with open(folder / "ratings.csv", "w") as fh:
        fh.write("userId,movieId,rating,timestamp\n")
        for start in range(0, rows, 5_000_000):
            n = min(5_000_000, rows - start)
            chunk = pd.DataFrame({
                "userId": np.sort(rng.integers(1, n_users + 1, n)),
                "movieId": rng.integers(1, n_movies + 1, n),
                "rating": rng.integers(1, 11, n) / 2,
                "timestamp": rng.integers(789_652_009, 1_574_327_703, n),
            })
            chunk.to_csv(fh, header=False, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=25_000_095)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ck-ml25m"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    folder = args.workdir / "ml-25m"
    if not (folder / "ratings.csv").is_file():
        start = time.perf_counter()
        write_copy(folder, args.rows)
        print(f"wrote the synthetic copy in {time.perf_counter() - start:.0f} s")
    os.environ["COLLABKIT_HOME"] = str(args.workdir / "home")
    from collabkit.datasets import _binary_path, load_dataset

    _binary_path("ml-25m", folder).unlink(missing_ok=True)
    start = time.perf_counter()
    data = load_dataset("ml-25m", data_dir=folder, download=False)
    cold = time.perf_counter() - start
    warm = []
    for _ in range(args.runs):
        start = time.perf_counter()
        load_dataset("ml-25m", data_dir=folder, download=False)
        warm.append(time.perf_counter() - start)
    size = _binary_path("ml-25m", folder).stat().st_size / 1e6
    print(f"| {len(data.ratings):,} ratings | first load (CSV parse + cache write) {cold:.1f} s "
          f"| reload from cache, median of {args.runs}: {statistics.median(warm):.2f} s | cache {size:.0f} MB |")


if __name__ == "__main__":
    main()
