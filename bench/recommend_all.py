"""Benchmark: top-10 recommendations for every user of MovieLens 100K, seen items excluded.

Trains DotProductBias (the lesson's recipe, 3 epochs: the timing does not depend
on how well it is trained), then times ``Recommender.recommend(all_users, n=10)``:
one matrix product, the seen items masked, one ``topk``. Median of ``--runs``.

    python bench/recommend_all.py [--data-dir ../shared/data] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from collabkit import CollabDataLoaders, DotProductBias, Learner, Recommender
from collabkit.datasets import load_ml_100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_ml_100k(args.data_dir)
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_df(data.ratings, user_name="user", item_name="movie", rating_name="rating",
                                    seed=42, bs=1024)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 50, (0, 5.5)), progress=False)
    learn.fit_one_cycle(3, 1e-2, wd=0.1)
    rec = Recommender.from_learner(learn, titles=data.titles.to_dict())
    users = list(rec.users)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        top = rec.recommend(users, n=10, exclude_seen=True)
        times.append(time.perf_counter() - start)
    assert len(top) == 10 * len(users)
    print(f"| {len(users)} users x {len(rec.items)} items | threads {args.threads} | "
          f"median {statistics.median(times) * 1000:.0f} ms | min {min(times) * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
