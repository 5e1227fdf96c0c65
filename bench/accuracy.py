"""Benchmark: accuracy against the published and measured baselines.

* ML-100K u1.base -> u1.test, and the mean over the five folds u1..u5;
* ml-latest-small, the lesson's random 80/20 split with seed 42;
* precision@10 and NDCG@10 on u1 (ratings >= 4 relevant; candidates: all trained
  items the user did not rate in u1.base).

For each preset (default: Bayesian PMF; lesson: the course's DotProductBias),
prints RMSE and fit time. One torch thread.

    python bench/accuracy.py [--data-dir ../shared/data] [--presets default lesson]
    python bench/accuracy.py --variants      # the variants tried on u1 (docs/benchmarks.md, "What was tried")
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from collabkit import Recommender
from collabkit.data import random_split, validate_ratings
from collabkit.datasets import load_ml_100k_split, load_ml_latest_small
from collabkit.evaluate import evaluate
from collabkit.metrics import rmse
from collabkit.training.recipe import PRESETS, train

COLUMNS = ["user", "movie", "rating"]


def fit_and_score(preset: str, train_frame, test_frame) -> tuple[float, float, object]:
    started = time.perf_counter()
    learn = train(PRESETS[preset], train_frame, test_frame)
    seconds = time.perf_counter() - started
    preds, targs = learn.get_preds()
    return rmse(preds, targs), seconds, learn


VARIANTS = {
    "lesson: DotProductBias, dense AdamW, fit_one_cycle(5, 5e-3, wd=0.1), bs 64": PRESETS["lesson"],
    "lesson recipe, 10 epochs": PRESETS["lesson"].replace(epochs=10),
    "row-sparse Adagrad, 50 factors, λ 0.02, lr 0.05, 20 epochs, bs 1024": PRESETS["lesson"].replace(
        solver="sparse", n_factors=50, wd=0.02, lr=0.05, epochs=20, bs=1024),
    "row-sparse Adagrad, 50 factors, λ 0.05, lr 0.05, 20 epochs, bs 1024": PRESETS["lesson"].replace(
        solver="sparse", n_factors=50, wd=0.05, lr=0.05, epochs=20, bs=1024),
    "Bayesian PMF, 5 factors": PRESETS["default"].replace(n_factors=5),
    "Bayesian PMF, 10 factors (default: 30 sweeps, 5 burn-in, every sample kept)": PRESETS["default"],
    "Bayesian PMF, 15 factors": PRESETS["default"].replace(n_factors=15),
    "Bayesian PMF, every 2nd sample kept": PRESETS["default"].replace(thin=2),
    "Bayesian PMF, 20 sweeps": PRESETS["default"].replace(sweeps=20),
    "Bayesian PMF, 40 sweeps": PRESETS["default"].replace(sweeps=40),
    "Bayesian PMF, 60 sweeps, 10 burn-in": PRESETS["default"].replace(sweeps=60, burn_in=10),
    "Bayesian PMF, 150 sweeps, 20 burn-in, every 2nd kept (the chain of the numba sampler)": PRESETS["default"].replace(
        sweeps=150, burn_in=20, thin=2),
}


def variants(data_dir: str) -> None:
    base, test = load_ml_100k_split("u1", data_dir)
    print("| variant | u1 RMSE | fit s |")
    print("|---|---:|---:|")
    for name, config in VARIANTS.items():
        started = time.perf_counter()
        learn = train(config, base.ratings[COLUMNS], test.ratings[COLUMNS])
        seconds = time.perf_counter() - started
        preds, targs = learn.get_preds()
        print(f"| {name} | {rmse(preds, targs):.4f} | {seconds:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--presets", nargs="+", default=["default", "lesson"])
    parser.add_argument("--variants", action="store_true", help="run the variants on u1 instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.variants:
        variants(args.data_dir)
        return
    print("| preset | data / split | RMSE | fit s |")
    print("|---|---|---:|---:|")
    for preset in args.presets:
        fold_rmse, fold_time = [], []
        for k in range(1, 6):
            base, test = load_ml_100k_split(f"u{k}", args.data_dir)
            score, seconds, learn = fit_and_score(preset, base.ratings[COLUMNS], test.ratings[COLUMNS])
            fold_rmse.append(score)
            fold_time.append(seconds)
            if k == 1:
                print(f"| {preset} | ML-100K u1 | {score:.4f} | {seconds:.1f} |")
                metrics = evaluate(Recommender.from_learner(learn), base.ratings[COLUMNS], test.ratings[COLUMNS])
                values = dict(zip(metrics["metric"], metrics["value"]))
                print(f"| {preset} | ML-100K u1 ranking | P@10 {values['precision@10']:.4f}, "
                      f"NDCG@10 {values['ndcg@10']:.4f} ({int(values['ranked_users'])} users) | |")
        per_fold = ", ".join(f"{v:.4f}" for v in fold_rmse)
        print(f"| {preset} | ML-100K u1-u5 mean ({per_fold}) | {statistics.mean(fold_rmse):.4f} "
              f"| {statistics.median(fold_time):.1f} (median) |")
        small = load_ml_latest_small()
        clean = validate_ratings(small.ratings, "userId", "movieId", "rating")
        train_idx, valid_idx = random_split(len(clean), 0.2, seed=42)
        columns = ["userId", "movieId", "rating"]
        score, seconds, _ = fit_and_score(preset, clean.iloc[train_idx][columns], clean.iloc[valid_idx][columns])
        print(f"| {preset} | ml-latest-small random 80/20 seed 42 | {score:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
