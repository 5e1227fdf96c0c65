"""Benchmark: implicit ALS sweeps on synthetic interactions, 1M and 10M pairs.

The interactions are ``collabkit train --data synthetic:SIZE``'s table (one user
per 100 rows, one item per 500, power-law item popularity, repeated pairs
adding up), treated as implicit feedback: every (user, item) pair is one
interaction whose value is how often it occurs. For each size this fits
:class:`collabkit.ImplicitALS` (64 factors, 3 CG steps) for ``--epochs``
sweeps and reports the seconds per sweep (median; the first sweep of a fresh
checkout also compiles the loop and is left out when ``--epochs`` is at least
3), interactions per second, the process's peak memory, and the share of
users whose held-out pair is in their top 100 (hit rate@100 over 1,000 users,
one pair per user held out) beside the most-popular chart's. The synthetic
users pick items by popularity alone (the planted taste is in the rating
values, not in the choice), so no model can beat the chart on who-rated-what
here: that column checks only that the sweeps learned the data's structure
(a random list of 100 would hit 100 / items, 0.5% at 10M).

    python bench/ials_scaling.py [--sizes 1M 10M] [--epochs 3] [--threads 2]

Each size runs in a fresh process so that peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(size: str, epochs: int, threads: int) -> dict:
    import logging

    import numba
    import numpy as np
    import torch

    from collabkit import ImplicitALS, Interactions, Popularity
    from collabkit.datasets import synthetic_dataset

    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    dataset, _ = synthetic_dataset(f"synthetic:{size}", seed=0)
    frame = dataset.ratings
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    rng = np.random.default_rng(1)
    probe_users = rng.choice(n_users, 1000, replace=False)
    first = np.full(n_users, -1)
    rows = np.arange(len(users))
    rng.shuffle(rows)
    first[users[rows]] = rows  # one random row per user is held out (the last written wins)
    held = first[probe_users]
    held = held[held >= 0]
    keep = np.ones(len(users), dtype=bool)
    keep[held] = False
    keep &= ~np.isin(users * n_items + items, users[held] * n_items + items[held])
    inter = Interactions.from_rows(users[keep], items[keep], None, n_users, n_items)

    times: list[float] = []

    class Timer(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("iALS sweep"):
                times.append(float(record.getMessage().split(": ")[1].split(" s")[0]))

    log = logging.getLogger("collabkit.models.ials")
    log.setLevel(logging.INFO)
    log.addHandler(Timer())
    started = time.perf_counter()
    model = ImplicitALS(n_factors=64, epochs=epochs).fit(inter)
    total = time.perf_counter() - started
    chart = Popularity().fit(inter)
    probe = users[held]
    hits = {}
    for name, m in (("ials", model), ("popular", chart)):
        seen = inter.take(probe)
        scores = m.score(seen, probe)
        scores[torch.from_numpy(seen.row_users()), torch.from_numpy(seen.indices)] = -torch.inf
        top = torch.topk(scores, 100, dim=1).indices.numpy()
        hits[name] = float((top == items[held][:, None]).any(1).mean())
    steady = times[1:] if len(times) >= 3 else times
    return {
        "size": size, "rows": len(frame), "interactions": inter.nnz, "users": n_users, "items": n_items,
        "threads": threads, "epochs": epochs, "sweep_s_median": float(np.median(steady)), "sweeps_s": times,
        "fit_s": total, "interactions_per_s": inter.nnz / float(np.median(steady)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "hit_rate@100": hits["ials"], "popular_hit_rate@100": hits["popular"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1M", "10M"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.epochs, args.threads)))
        return
    print(f"{'size':>5} {'pairs':>11} {'users':>8} {'items':>7} {'s/sweep':>8} {'pairs/s':>11} {'peak GB':>8} "
          f"{'hit@100':>8} {'popular':>8}")
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", size, "--epochs", str(args.epochs),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['size']:>5} {r['interactions']:>11,} {r['users']:>8,} {r['items']:>7,} {r['sweep_s_median']:>8.2f} "
              f"{r['interactions_per_s']:>11,.0f} {r['peak_rss_gb']:>8.2f} {r['hit_rate@100']:>8.3f} "
              f"{r['popular_hit_rate@100']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
