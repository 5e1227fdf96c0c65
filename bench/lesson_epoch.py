"""Benchmark: the lesson as written, on MovieLens 100K.

DotProductBias (the core model, same maths as the lesson's), bs=64, the lesson's
random 80/20 split (seed 42), ``fit_one_cycle(5, 5e-3, wd=0.1)``, dense AdamW
(fastai's semantics). Reports seconds per epoch (median over all epochs of all
runs) and the final validation MSE, for each torch thread count asked for.

    python bench/lesson_epoch.py [--data-dir ../shared/data] [--runs 3] [--threads 1 2] [--autograd]

``--autograd`` trains through autograd (``Learner(fast=False)``) instead of
the default fused compiled loop, which makes the same updates without autograd.

Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from collabkit import CollabDataLoaders, DotProductBias, Learner
from collabkit.datasets import load_ml_100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--autograd", action="store_true", help="train through autograd (Learner(fast=False))")
    args = parser.parse_args()

    data = load_ml_100k(args.data_dir).with_titles()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| threads | s/epoch (median) | fit 5 epochs (median s) | valid MSE (median) |")
    print("|---:|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        epoch_times, fit_times, mses = [], [], []
        for run in range(args.runs):
            torch.manual_seed(42 + run)
            dls = CollabDataLoaders.from_df(
                data, item_name="title", user_name="user", rating_name="rating", seed=42, bs=args.bs, duplicates="keep"
            )
            model = DotProductBias(len(dls.users), len(dls.items), 50, (0, 5.5))
            learn = Learner(dls, model, progress=False, fast=not args.autograd)
            start = time.perf_counter()
            learn.fit_one_cycle(5, 5e-3, wd=0.1)
            fit_times.append(time.perf_counter() - start)
            epoch_times += learn.recorder.times
            mses.append(learn.recorder.values[-1][1])
        print(
            f"| {threads} | {statistics.median(epoch_times):.2f} | {statistics.median(fit_times):.2f} "
            f"| {statistics.median(mses):.3f} |"
        )


if __name__ == "__main__":
    main()
