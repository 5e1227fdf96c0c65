"""Benchmark: one small prediction request, as the server sees it.

Times ``Recommender.predict`` (returns a DataFrame) against
``Recommender.predict_values`` (returns arrays; what ``POST /predict`` calls)
for a batch of 10 (user, item) pairs, on a DotProductBias trained briefly on
ml-100k. Median over many calls, one thread.

    python bench/predict_latency.py [--data-dir ../shared/data] [--pairs 10] [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from collabkit import Recommender
from collabkit.datasets import load_ml_100k
from collabkit.training.recipe import PRESETS, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_ml_100k(args.data_dir)
    learn = train(PRESETS["lesson"].replace(epochs=1, bs=1024, lr=1e-2), data.ratings[["user", "movie", "rating"]])
    rec = Recommender.from_learner(learn)
    users, items = list(rec.users)[: args.pairs], list(rec.items)[: args.pairs]
    print(f"| call ({args.pairs} pairs) | median µs |")
    print("|---|---:|")
    for name in ("predict", "predict_values"):
        method = getattr(rec, name)
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            method(users, items)
            times.append(time.perf_counter() - started)
        print(f"| `{name}` | {statistics.median(times) * 1e6:.0f} |")


if __name__ == "__main__":
    main()
