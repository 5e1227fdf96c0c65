"""Benchmark: row-sparse training on synthetic planted ratings at 1M, 10M and 100M ratings.

For each size: generate planted low-rank ratings (power-law item popularity,
``collabkit.datasets.synthetic``), hold out 1% for validation, train
``DotProductBias`` (k=64, no y_range) with the row-sparse solver for
``--epochs`` epochs, and report seconds per epoch, ratings per second, the
process's peak memory, and the RMSE against the planted (noiseless) truth.
Each size runs in a fresh process so that peak memory is its own.

    python bench/scaling.py [--sizes 1M 10M 100M] [--epochs 3] [--threads 1 2] [--engine compiled|torch]

The compiled engine's first run in a fresh checkout also compiles its loop
(a few seconds, then cached); the median epoch time leaves that out only if
``--epochs`` is at least 3.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = {"1M": (1_000_000, 10_000, 2_000), "10M": (10_000_000, 100_000, 20_000), "100M": (100_000_000, 1_000_000, 200_000)}


def run_one(size: str, epochs: int, threads: int, bs: int, k: int, engine: str) -> dict:
    import numpy as np
    import torch

    from collabkit import CollabDataLoaders, DotProductBias, Learner
    from collabkit.data import IndexBatches, Vocabulary
    from collabkit.datasets import synthetic
    from collabkit.metrics import rmse
    from collabkit.training.sparse import fit_sparse

    torch.set_num_threads(threads)
    n, n_users, n_items = SIZES[size]
    started = time.perf_counter()
    data = synthetic(n, n_users, n_items, rank=16, noise=0.5, seed=0)
    generate_s = time.perf_counter() - started
    cut = n - n // 100
    truth = data.truth(data.users[cut:], data.items[cut:])
    x = torch.from_numpy(np.stack([data.users, data.items], 1))  # int32 (n, 2): the loader's layout
    y = torch.from_numpy(data.ratings)  # shares the generator's array
    data.users = data.items = None  # keep one copy of the ratings, as a user's process would
    dls = CollabDataLoaders(
        IndexBatches(x[:cut], y[:cut], bs=bs, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)),
        IndexBatches(x[cut:], y[cut:], bs=1 << 18),
        {"user": Vocabulary(np.arange(n_users), "user"), "item": Vocabulary(np.arange(n_items), "item")},
        "user", "item", "rating",
    )
    learn = Learner(dls, DotProductBias(n_users, n_items, k, y_range=None), progress=False)
    fit_sparse(learn, epochs=epochs, lr=0.05, reg=0.02, compiled=engine == "compiled")
    preds, _ = learn.get_preds()
    epoch_s = float(np.median(learn.recorder.times))
    raw_gb = n * 12 / 1e9
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {
        "size": size, "engine": engine, "threads": threads, "generate_s": round(generate_s, 1), "epoch_s": round(epoch_s, 2),
        "ratings_per_s": round(cut / epoch_s), "peak_gb": round(peak_gb, 2), "peak_over_raw": round(peak_gb / raw_gb, 2),
        "rmse_vs_truth": round(rmse(preds, truth), 4), "rmse_vs_observed": round(learn.recorder.values[-1][2] if learn.metrics else float("nan"), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1M", "10M"], choices=list(SIZES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--bs", type=int, default=32768)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--engine", choices=("compiled", "torch"), default="compiled",
                        help="the sparse solver's CPU engine (compiled loop) or its torch-ops engine (as on CUDA)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        size, threads = args.one.split(",")
        print(json.dumps(run_one(size, args.epochs, int(threads), args.bs, args.k, args.engine)))
        return
    print("| ratings | threads | generate s | s/epoch | ratings/s | peak GB | peak / raw | RMSE vs truth |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for threads in args.threads:
            out = subprocess.run(
                [sys.executable, __file__, "--one", f"{size},{threads}", "--epochs", str(args.epochs),
                 "--bs", str(args.bs), "--k", str(args.k), "--engine", args.engine],
                capture_output=True, text=True, check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {size} | {threads} | {r['generate_s']} | {r['epoch_s']} | {r['ratings_per_s']:,} | "
                  f"{r['peak_gb']} | {r['peak_over_raw']} | {r['rmse_vs_truth']} |", flush=True)


if __name__ == "__main__":
    main()
