"""Benchmark: accuracy against the published and measured baselines.

* ML-100K u1.base -> u1.test, and the mean over the five folds u1..u5;
* ml-latest-small, the lesson's random 80/20 split with seed 42;
* precision@10 and NDCG@10 on u1 (ratings >= 4 relevant; candidates: all trained
  items the user did not rate in u1.base).

For each preset (default: Bayesian PMF; lesson: the course's DotProductBias;
accurate: Bayesian SVD++), prints RMSE and fit time, with ua and ub beside the
five folds. One torch thread.

    python bench/accuracy.py [--data-dir ../shared/data] [--presets default lesson accurate]
    python bench/accuracy.py --presets accurate --seeds 0 1 2   # u1 over three seeds: mean and spread
    python bench/accuracy.py --variants      # the variants tried on u1 (docs/benchmarks.md, "What was tried")
    python bench/accuracy.py --tune          # the settings compared on a validation split of u1.base, not u1.test
    python bench/accuracy.py --transductive  # a labelled research row: implicit sets that include u1.test's pairs
    python bench/accuracy.py --time-effects  # a labelled research row: a shrunk bias per (user, day), post hoc
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from collabkit import Recommender
from collabkit.data import random_split, validate_ratings
from collabkit.datasets import load_ml_100k_split, load_ml_latest_small
from collabkit.evaluate import evaluate
from collabkit.metrics import rmse
from collabkit.training.bayes_svdpp import fit_bayes_svdpp
from collabkit.training.recipe import PRESETS, TrainConfig, prepare, train

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


ACCURATE = PRESETS["accurate"]
TUNING = {
    # name -> config, each scored on 10% of u1.base (random_split seed 0) after fitting the other 90%
    "Bayesian PMF (default)": PRESETS["default"],
    "Bayesian PMF, 100 sweeps, 10 burn-in, every 2nd kept": PRESETS["default"].replace(sweeps=100, burn_in=10, thin=2),
    "Bayesian PMF, 20 factors, 250 sweeps, 30 burn-in, every 5th kept": PRESETS["default"].replace(
        n_factors=20, sweeps=250, burn_in=30, thin=5),
    "SVD++ as the default's chain: 30 sweeps, 5 burn-in": ACCURATE.replace(sweeps=30, burn_in=5, thin=1),
    "SVD++, 60 sweeps, 10 burn-in, every 2nd kept": ACCURATE.replace(sweeps=60, burn_in=10, thin=2),
    "SVD++, 100 sweeps, 20 burn-in, every 2nd kept": ACCURATE.replace(sweeps=100, burn_in=20, thin=2),
    "SVD++, 250 sweeps, 30 burn-in, every 5th kept": ACCURATE.replace(sweeps=250, burn_in=30, thin=5),
    "SVD++, 500 sweeps, 50 burn-in, every 10th kept (accurate)": ACCURATE,
    "SVD++, 1000 sweeps, 100 burn-in, every 20th kept": ACCURATE.replace(sweeps=1000, burn_in=100, thin=20),
    "SVD++, 6 factors, 500 sweeps": ACCURATE.replace(n_factors=6),
    "SVD++, 20 factors, 250 sweeps": ACCURATE.replace(n_factors=20, sweeps=250, burn_in=30, thin=5),
    "SVD++, 32 factors, 250 sweeps": ACCURATE.replace(n_factors=32, sweeps=250, burn_in=30, thin=5),
}
ABLATIONS = {  # the parts of the accurate preset, each left out (same chain, same validation split)
    "no biases": {"biases": False},
    "no implicit factors (Bayesian PMF with biases)": {"user_implicit": False, "item_implicit": False},
    "users' implicit factors only (SVD++)": {"item_implicit": False},
    "items' implicit factors only (flipped)": {"user_implicit": False},
}


def u1_validation(data_dir: str):
    """u1.base split 90/10 (random_split seed 0): the data every setting was chosen on."""
    base, _ = load_ml_100k_split("u1", data_dir)
    frame = base.ratings[COLUMNS]
    train_idx, valid_idx = random_split(len(frame), 0.1, seed=0)
    return frame.iloc[train_idx], frame.iloc[valid_idx]


def tune(data_dir: str) -> None:
    fit_frame, valid_frame = u1_validation(data_dir)
    print("| setting (chosen on 10% of u1.base, never on u1.test) | validation RMSE | fit s |")
    print("|---|---:|---:|")
    for name, config in TUNING.items():
        started = time.perf_counter()
        learn = train(config, fit_frame, valid_frame)
        seconds = time.perf_counter() - started
        print(f"| {name} | {rmse(*learn.get_preds()):.4f} | {seconds:.1f} |", flush=True)
    for name, changes in ABLATIONS.items():
        learn = prepare(ACCURATE, fit_frame, valid_frame)
        started = time.perf_counter()
        fit_bayes_svdpp(learn, dataclasses.replace(ACCURATE.settings(), **changes), seed=ACCURATE.seed)
        seconds = time.perf_counter() - started
        print(f"| accurate, {name} | {rmse(*learn.get_preds()):.4f} | {seconds:.1f} |", flush=True)


def transductive(data_dir: str, config: TrainConfig = ACCURATE) -> None:
    """u1 with the implicit sets taken from u1.base *and* u1.test's (user, item) pairs: which films each user
    will be asked about is known at training time. Not a fair result; a labelled row beside the headline."""
    base, test = load_ml_100k_split("u1", data_dir)
    learn = prepare(config, base.ratings[COLUMNS], test.ratings[COLUMNS])
    pairs = torch.cat([learn.dls.train.x, learn.dls.valid.x]).cpu().numpy().astype(np.int64)
    started = time.perf_counter()
    fit_bayes_svdpp(learn, config.settings(), seed=config.seed, implicit_pairs=(pairs[:, 0], pairs[:, 1]))
    seconds = time.perf_counter() - started
    print(f"| accurate, TRANSDUCTIVE (implicit sets include u1.test's pairs) | ML-100K u1 | "
          f"{rmse(*learn.get_preds()):.4f} | {seconds:.1f} |")


DAY_SHRINKAGE = (2, 5, 10, 25, 100)


def day_biases(fit_frame, residual, query_frame, shrinkage: float):
    """Each query's (user, day) bias: the training residuals of that user on that day (UTC), summed and divided
    by their count + ``shrinkage``; 0 where the user rated nothing in training that day."""
    def keys(frame):
        return frame["user"].to_numpy().astype(np.int64) * 100_000 + frame["timestamp"].to_numpy() // 86_400
    table = pd.DataFrame({"key": keys(fit_frame), "r": residual}).groupby("key")["r"].agg(["sum", "count"])
    effect = table["sum"] / (table["count"] + shrinkage)
    return pd.Series(keys(query_frame)).map(effect).fillna(0.0).to_numpy()


def time_effects(data_dir: str, config: TrainConfig = ACCURATE) -> None:
    """The accurate preset plus a post-hoc bias per (user, day) from its training residuals (users rate many
    films in one sitting, in one mood). It reads the day of each test rating, a feature of the query beyond
    (user, film), and is not a saved model: a labelled research row. The shrinkage is chosen on u1.base's
    validation split."""
    def fitted(fit_frame, query_frame):
        learn = train(config, fit_frame[COLUMNS], query_frame[COLUMNS])
        rec = Recommender.from_learner(learn)
        def predict(frame):
            return rec.predict_values(frame["user"].to_numpy(), frame["movie"].to_numpy())[0]
        return predict(fit_frame), predict(query_frame)

    base, test = load_ml_100k_split("u1", data_dir)
    train_idx, valid_idx = random_split(len(base.ratings), 0.1, seed=0)
    fit_frame, valid_frame = base.ratings.iloc[train_idx], base.ratings.iloc[valid_idx]
    on_fit, on_valid = fitted(fit_frame, valid_frame)
    residual, truth = fit_frame["rating"].to_numpy() - on_fit, valid_frame["rating"].to_numpy()
    print("| accurate + (user, day) bias, shrinkage | validation RMSE (10% of u1.base) |")
    print("|---|---:|")
    print(f"| none | {np.sqrt(np.mean((on_valid - truth) ** 2)):.4f} |")
    scores = {}
    for shrinkage in DAY_SHRINKAGE:
        pred = on_valid + day_biases(fit_frame, residual, valid_frame, shrinkage)
        scores[shrinkage] = float(np.sqrt(np.mean((pred - truth) ** 2)))
        print(f"| {shrinkage} | {scores[shrinkage]:.4f} |", flush=True)
    best = min(scores, key=scores.get)
    on_base, on_test = fitted(base.ratings, test.ratings)
    truth = test.ratings["rating"].to_numpy()
    with_days = on_test + day_biases(base.ratings, base.ratings["rating"].to_numpy() - on_base, test.ratings, best)
    print(f"\nu1.test: accurate {np.sqrt(np.mean((on_test - truth) ** 2)):.4f}; with the (user, day) bias "
          f"(shrinkage {best}, chosen above; RESEARCH ROW, reads the test ratings' days) "
          f"{np.sqrt(np.mean((with_days - truth) ** 2)):.4f}")


def seeds(preset: str, seed_list: list[int], data_dir: str) -> None:
    base, test = load_ml_100k_split("u1", data_dir)
    scores, times = [], []
    for seed in seed_list:
        started = time.perf_counter()
        learn = train(PRESETS[preset].replace(seed=seed), base.ratings[COLUMNS], test.ratings[COLUMNS])
        times.append(time.perf_counter() - started)
        scores.append(rmse(*learn.get_preds()))
    listed = ", ".join(f"{s:.4f}" for s in scores)
    print(f"| {preset} | ML-100K u1, seeds {' '.join(map(str, seed_list))} ({listed}) | "
          f"{statistics.mean(scores):.4f} ± {statistics.stdev(scores):.4f} (min {min(scores):.4f}, "
          f"max {max(scores):.4f}) | {statistics.median(times):.1f} (median) |", flush=True)


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
    parser.add_argument("--tune", action="store_true", help="compare settings on a validation split of u1.base")
    parser.add_argument("--transductive", action="store_true", help="the labelled transductive row on u1")
    parser.add_argument("--time-effects", action="store_true", help="the labelled (user, day) bias row on u1")
    parser.add_argument("--seeds", type=int, nargs="+", help="u1 only, once per seed: mean, spread")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rmse_table = "| preset | data / split | RMSE | fit s |\n|---|---|---:|---:|"
    if args.variants:
        variants(args.data_dir)
    elif args.tune:
        tune(args.data_dir)
    elif args.transductive:
        print(rmse_table)
        transductive(args.data_dir)
    elif args.time_effects:
        time_effects(args.data_dir)
    elif args.seeds:
        print("| preset | data / split | RMSE mean ± sd | fit s |\n|---|---|---:|---:|")
        for preset in args.presets:
            seeds(preset, args.seeds, args.data_dir)
    else:
        print(rmse_table)
        presets(args.presets, args.data_dir)


def presets(names: list[str], data_dir: str) -> None:
    """Each preset on ML-100K u1 (with its ranking), the u1–u5 mean, ua, ub and ml-latest-small."""
    for preset in names:
        fold_rmse, fold_time = [], []
        for k in range(1, 6):
            base, test = load_ml_100k_split(f"u{k}", data_dir)
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
              f"| {statistics.median(fold_time):.1f} (median) |", flush=True)
        for split in ("ua", "ub"):
            base, test = load_ml_100k_split(split, data_dir)
            score, seconds, _ = fit_and_score(preset, base.ratings[COLUMNS], test.ratings[COLUMNS])
            print(f"| {preset} | ML-100K {split}.base → {split}.test | {score:.4f} | {seconds:.1f} |", flush=True)
        small = load_ml_latest_small()
        clean = validate_ratings(small.ratings, "userId", "movieId", "rating")
        train_idx, valid_idx = random_split(len(clean), 0.2, seed=42)
        columns = ["userId", "movieId", "rating"]
        score, seconds, _ = fit_and_score(preset, clean.iloc[train_idx][columns], clean.iloc[valid_idx][columns])
        print(f"| {preset} | ml-latest-small random 80/20 seed 42 | {score:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
