"""Benchmark: top-10 ranking quality of collabkit's ranking models beside popularity, the rating model and `implicit`.

Protocol (the project's own, as ``collabkit evaluate``; the figures come from
:func:`collabkit.evaluate.evaluate`): relevant = a test rating >= 4; each user's
candidates are all the trained items they did not rate in training; precision@10
and NDCG@10 are averaged over the test users with a relevant (trained) item.

Data:

* ML-100K u1: train ``u1.base``, test ``u1.test``;
* ml-latest-small: a random 90/10 split with seed 42 (``random_split(n, 0.1, 42)``).

Rows of the table (one table per dataset):

1. popularity (the most-rated training items);
2. the rating model (preset ``default``, Bayesian PMF), ranked by predicted rating;
3. the ranking model ``collabkit train`` fits by default (``fit_ranker("auto")``: EASE on rating values);
4. EASE as published (binary 0/1 input, lambda 500, every item modelled);
5. collabkit's implicit ALS with its defaults (rating-valued input);
6. the ``implicit`` package's ALS and BPR (64 factors, its defaults otherwise; rating-valued
   input, which BPR reads as 0/1), only when ``import implicit`` works (an optional peer,
   never a dependency of collabkit).

Columns: P@10, NDCG@10, fit seconds (the ranking model's fit; for row 2 the rating model's),
and the milliseconds of top-10 lists for every trained user, seen items excluded (median of 5;
``Recommender.top_n`` for collabkit's rows, ``model.recommend`` for implicit's).
Every engine (torch, numba, implicit, BLAS) runs on ``--threads`` threads (default 1).

``--tune`` chooses hyperparameters on a validation split carved from the *training* part
only (random 10%, seed 7; the test split is never looked at while choosing): EASE's l2 over
(50, 100, 200, 300, 500) on rating values and on binary input (collabkit's default min_count), and implicit ALS over l2 (10, 50, 100) x alpha (0.5, 1, 2, 4) with 64 factors; then
prints the test figures of the chosen settings, and (on ml-latest-small) how EASE's fit time
and test NDCG depend on min_count (1, 3, 5).

    python bench/ranking.py [--data ml-100k-u1 ml-latest-small] [--data-dir ../shared/data] [--threads 1]
    python bench/ranking.py --tune
    /tmp/peer-venv/bin/python bench/ranking.py    # a venv that also has `implicit`, for rows 6
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import collabkit.training.numba_threads  # noqa: F401 - numba's thread layer, before any parallel loop
from collabkit import Recommender, load_dataset
from collabkit.data import random_split, validate_ratings
from collabkit.data.interactions import Interactions
from collabkit.datasets import load_ml_100k_split
from collabkit.evaluate import evaluate
from collabkit.models.ranker import Ranker
from collabkit.models.registry import ranker as make_ranker
from collabkit.training.recipe import PRESETS, train

try:  # the optional peer: never a dependency
    import implicit
except ImportError:
    implicit = None

DATASETS = ("ml-100k-u1", "ml-latest-small")
K = 10
TIMING_RUNS = 5
EASE_L2_GRID = (50, 100, 200, 300, 500)
IALS_L2_GRID = (10, 50, 100)
IALS_ALPHA_GRID = (0.5, 1, 2, 4)
MIN_COUNTS = (1, 3, 5)
TUNE_VALID_PCT, TUNE_SEED = 0.1, 7


# --- data ----------------------------------------------------------------------------------------
def load_split(name: str, data_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, test)`` frames of user, item, rating."""
    if name == "ml-100k-u1":
        base, test = load_ml_100k_split("u1", data_dir)
        columns = ["user", "movie", "rating"]
        return base.ratings[columns], test.ratings[columns]
    clean = validate_ratings(load_dataset("ml-latest-small").ratings, "userId", "movieId", "rating")
    train_idx, test_idx = random_split(len(clean), 0.1, 42)
    return clean.iloc[train_idx], clean.iloc[test_idx]


def binary(interactions: Interactions) -> Interactions:
    """The same (user, item) pairs with every value 1."""
    return Interactions.from_rows(interactions.row_users(), interactions.indices, None,
                                  interactions.n_users, interactions.n_items)


# --- models and measurements ---------------------------------------------------------------------
def rating_recommender(train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> tuple[Recommender, float]:
    """The default preset (Bayesian PMF) trained on ``train_frame``, as a Recommender, and its fit seconds.
    ``test_frame`` is only reported on (its validation MSE), as ``collabkit train`` does."""
    started = time.perf_counter()
    learn = train(PRESETS["default"], train_frame, test_frame)
    return Recommender.from_learner(learn), time.perf_counter() - started


def with_ranker(rec: Recommender, ranker: Ranker, interactions: Interactions) -> tuple[Recommender, float]:
    """``rec``'s rating model, vocabularies and history with ``ranker`` fitted on ``interactions``
    (which the ranker then also scores users from), and the fit seconds."""
    started = time.perf_counter()
    ranker.fit(interactions)
    seconds = time.perf_counter() - started
    return Recommender(rec.model, rec.users, rec.items, rec.columns, rec.titles, rec.info, rec.history,
                       ranker, interactions), seconds


def ranking_figures(rec: Recommender, train_frame, test_frame, rank_by: str = "ranking") -> dict[str, float]:
    """P@10, NDCG@10 and the users they average over, by :func:`evaluate` (with popularity's beside)."""
    metrics = evaluate(rec, train_frame, test_frame, k=K, rank_by=rank_by).set_index("metric")
    return {"p": metrics.at[f"precision@{K}", "value"], "ndcg": metrics.at[f"ndcg@{K}", "value"],
            "users": metrics.at["ranked_users", "value"],
            "pop_p": metrics.at[f"precision@{K}", "popularity"], "pop_ndcg": metrics.at[f"ndcg@{K}", "popularity"]}


def median_ms(call) -> float:
    """Median wall time of ``call()`` over ``TIMING_RUNS`` runs, in milliseconds."""
    times = []
    for _ in range(TIMING_RUNS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def top10_ms(rec: Recommender, rank_by: str = "ranking") -> float:
    """Top-10 lists for every trained user, seen items excluded, the way ``recommend`` makes them."""
    users = np.flatnonzero(rec.user_trained)
    return median_ms(lambda: rec.top_n(users, n=K, exclude=rec.history, rank_by=rank_by))


class FactorRanker(Ranker):
    """Fitted user and item vectors from elsewhere (the ``implicit`` package), scored as ``x_u . y_i``,
    so that :func:`evaluate` measures them exactly as it measures collabkit's rankers."""

    name = "implicit"

    def __init__(self, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
        self.user_factors = torch.from_numpy(np.ascontiguousarray(user_factors, dtype=np.float32))
        self.item_factors = torch.from_numpy(np.ascontiguousarray(item_factors, dtype=np.float32))
        self.n_items = len(item_factors)

    def fit(self, interactions: Interactions) -> FactorRanker:
        return self  # fitted already

    def score(self, users: Interactions, user_rows: np.ndarray) -> torch.Tensor:
        return self.user_factors[torch.from_numpy(np.asarray(user_rows, dtype=np.int64))] @ self.item_factors.T


def blas_threads(n: int):
    """Limit BLAS to ``n`` threads when threadpoolctl is there (implicit asks for 1), else do nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n, "blas")


def implicit_rows(rec: Recommender, train_frame, test_frame, threads: int) -> list[tuple]:
    """Rows for the `implicit` package's ALS and BPR (64 factors, its defaults otherwise)."""
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking
    from scipy.sparse import csr_matrix

    inter = rec.interactions
    user_items = csr_matrix((inter.values, inter.indices, inter.indptr), shape=(inter.n_users, inter.n_items))
    users = np.flatnonzero(rec.user_trained)
    rows = []
    for label, cls in (("implicit ALS", AlternatingLeastSquares), ("implicit BPR", BayesianPersonalizedRanking)):
        with blas_threads(1):  # before the model: implicit checks the BLAS threads when it is made
            model = cls(factors=64, num_threads=threads, random_state=0)
            started = time.perf_counter()
            model.fit(user_items, show_progress=False)
            seconds = time.perf_counter() - started
            ms = median_ms(lambda m=model: m.recommend(users, user_items[users], N=K, filter_already_liked_items=True))
        peer = Recommender(rec.model, rec.users, rec.items, rec.columns, rec.titles, rec.info, rec.history,
                           FactorRanker(model.user_factors, model.item_factors), inter)
        rows.append((f"{label} {implicit.__version__} (64 factors, rating values)",
                     ranking_figures(peer, train_frame, test_frame), seconds, ms))
    return rows


def warm_up() -> None:
    """Load iALS's compiled kernel once, so no fit time below includes numba's start-up."""
    tiny = Interactions.from_rows(np.array([0, 1]), np.array([0, 1]), None, 2, 2)
    make_ranker("ials", n_factors=2, epochs=1).fit(tiny)


# --- the main table ------------------------------------------------------------------------------
def print_table(title: str, rows: list[tuple]) -> None:
    print(f"\n### {title}\n")
    print(f"| model | P@{K} | NDCG@{K} | fit s | top-{K} all users ms |")
    print("|---|---:|---:|---:|---:|")
    for label, figures, seconds, ms in rows:
        print(f"| {label} | {figures['p']:.4f} | {figures['ndcg']:.4f} | {seconds:.2f} | {ms:.1f} |", flush=True)


def benchmark(name: str, data_dir: str, threads: int) -> None:
    """One table: the six rows of the module docstring on one dataset."""
    train_frame, test_frame = load_split(name, data_dir)
    rec, rating_seconds = rating_recommender(train_frame, test_frame)
    rating_values = rec.interactions
    rows = []

    popular, seconds = with_ranker(rec, make_ranker("popular"), rating_values)
    figures = ranking_figures(popular, train_frame, test_frame)
    rows.append(("popularity (most-rated training items)", figures, seconds, top10_ms(popular)))
    users = int(figures["users"])

    by_rating = ranking_figures(rec, train_frame, test_frame, rank_by="rating")
    rows.append(("rating model (default preset, Bayesian PMF), ranked by predicted rating", by_rating,
                 rating_seconds, top10_ms(rec, "rating")))

    started = time.perf_counter()
    rec.fit_ranker("auto")
    seconds = time.perf_counter() - started
    config = ", ".join(f"{k} {v:g}" for k, v in rec.ranker.config().items())
    rows.append((f"collabkit train's default ranker: {rec.ranker.name} on rating values ({config})",
                 ranking_figures(rec, train_frame, test_frame), seconds, top10_ms(rec)))

    published, seconds = with_ranker(rec, make_ranker("ease", l2=500, min_count=1, max_items=20000),
                                     binary(rating_values))
    rows.append((f"EASE as published: binary, l2 500, all {len(published.ranker.items):,} items",
                 ranking_figures(published, train_frame, test_frame), seconds, top10_ms(published)))

    ials, seconds = with_ranker(rec, make_ranker("ials"), rating_values)
    config = ", ".join(f"{k} {v:g}" for k, v in ials.ranker.config().items())
    rows.append((f"collabkit iALS on rating values ({config})",
                 ranking_figures(ials, train_frame, test_frame), seconds, top10_ms(ials)))

    if implicit is not None:
        rows.extend(implicit_rows(rec, train_frame, test_frame, threads))
    print_table(f"{name}: {len(train_frame):,} train / {len(test_frame):,} test ratings, "
                f"{users} test users with a relevant item", rows)
    if implicit is None:
        print("\n(`implicit` is not installed here: its ALS and BPR rows are skipped.)")
    if abs(figures["p"] - figures["pop_p"]) > 1e-12:  # the popularity row is evaluate's own baseline
        print(f"\nnote: popularity row P@{K} {figures['p']:.4f} differs from evaluate's baseline {figures['pop_p']:.4f}")


# --- --tune --------------------------------------------------------------------------------------
@dataclass
class Setting:
    """One ranker configuration and the interactions it reads ("rating" values or "binary")."""

    model: str
    input: str
    config: dict

    def label(self) -> str:
        config = ", ".join(f"{k} {v:g}" for k, v in self.config.items())
        return f"{self.model} on {'rating values' if self.input == 'rating' else 'binary input'} ({config})"

    def fit(self, rec: Recommender) -> tuple[Recommender, float]:
        interactions = rec.interactions if self.input == "rating" else binary(rec.interactions)
        return with_ranker(rec, make_ranker(self.model, **self.config), interactions)


def ease_grid(kind: str) -> list[Setting]:
    min_count = make_ranker("ease").min_count  # collabkit's default
    return [Setting("ease", kind, {"l2": l2, "min_count": min_count}) for l2 in EASE_L2_GRID]


def ials_grid() -> list[Setting]:
    return [Setting("ials", "rating", {"n_factors": 64, "l2": l2, "alpha": alpha})
            for l2 in IALS_L2_GRID for alpha in IALS_ALPHA_GRID]


def search(grid: list[Setting], rec: Recommender, fit_frame, valid_frame) -> Setting:
    """Print every setting's validation figures; return the setting with the best validation NDCG@10."""
    print(f"| setting | valid P@{K} | valid NDCG@{K} | fit s |")
    print("|---|---:|---:|---:|")
    scored = []
    for setting in grid:
        fitted, seconds = setting.fit(rec)
        figures = ranking_figures(fitted, fit_frame, valid_frame)
        scored.append((figures["ndcg"], setting))
        print(f"| {setting.label()} | {figures['p']:.4f} | {figures['ndcg']:.4f} | {seconds:.2f} |", flush=True)
    ndcg, best = max(scored, key=lambda pair: pair[0])
    print(f"\nbest on validation: {best.label()}, NDCG@{K} {ndcg:.4f}\n")
    return best


def tune(name: str, data_dir: str) -> None:
    """Choose on a validation split of the training part, then report the chosen settings on test."""
    train_frame, test_frame = load_split(name, data_dir)
    fit_idx, valid_idx = random_split(len(train_frame), TUNE_VALID_PCT, TUNE_SEED)
    fit_frame, valid_frame = train_frame.iloc[fit_idx], train_frame.iloc[valid_idx]
    print(f"\n## {name}: tuning on {len(fit_frame):,} ratings, validating on {len(valid_frame):,} "
          f"(random {TUNE_VALID_PCT:.0%} of the training part, seed {TUNE_SEED}); test untouched\n")
    valid_rec, _ = rating_recommender(fit_frame, valid_frame)
    chosen = [search(grid, valid_rec, fit_frame, valid_frame)
              for grid in (ease_grid("rating"), ease_grid("binary"), ials_grid())]

    rec, _ = rating_recommender(train_frame, test_frame)
    defaults = [Setting("ease", "rating", {k: make_ranker("ease").config()[k] for k in ("l2", "min_count")}),
                Setting("ials", "rating", make_ranker("ials").config())]
    print(f"### {name}: test figures (fitted on the whole training part)\n")
    print(f"| setting | chosen by | test P@{K} | test NDCG@{K} | fit s |")
    print("|---|---|---:|---:|---:|")
    for setting, how in [(s, "validation") for s in chosen] + [(s, "collabkit default") for s in defaults]:
        fitted, seconds = setting.fit(rec)
        figures = ranking_figures(fitted, train_frame, test_frame)
        print(f"| {setting.label()} | {how} | {figures['p']:.4f} | {figures['ndcg']:.4f} | {seconds:.2f} |",
              flush=True)
    if name == "ml-latest-small":
        min_count_cost(valid_rec, fit_frame, valid_frame, rec, train_frame, test_frame)


def min_count_cost(valid_rec: Recommender, fit_frame, valid_frame, rec: Recommender, train_frame, test_frame) -> None:
    """EASE's fit time, validation and test figures against min_count (l2 200, rating values)."""
    print("\n### ml-latest-small: EASE (rating values, l2 200) against min_count\n")
    print(f"| min_count | items modelled | fit s | valid NDCG@{K} | test P@{K} | test NDCG@{K} |")
    print("|---:|---:|---:|---:|---:|---:|")
    for min_count in MIN_COUNTS:
        ranker = dict(l2=200, min_count=min_count, max_items=20000)
        valid_fit, _ = with_ranker(valid_rec, make_ranker("ease", **ranker), valid_rec.interactions)
        valid = ranking_figures(valid_fit, fit_frame, valid_frame)
        fitted, seconds = with_ranker(rec, make_ranker("ease", **ranker), rec.interactions)
        figures = ranking_figures(fitted, train_frame, test_frame)
        print(f"| {min_count} | {len(fitted.ranker.items):,} | {seconds:.2f} | {valid['ndcg']:.4f} | "
              f"{figures['p']:.4f} | {figures['ndcg']:.4f} |", flush=True)


# --- entry point ---------------------------------------------------------------------------------
def set_threads(n: int) -> int:
    """Run torch and numba (collabkit's iALS) on ``n`` threads; returns numba's count (clamped to its pool)."""
    import numba

    torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    return numba.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--data", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, numba and implicit (default 1)")
    parser.add_argument("--tune", action="store_true", help="choose hyperparameters on a validation split instead")
    args = parser.parse_args()
    numba_threads = set_threads(args.threads)
    peer = f"implicit {implicit.__version__}" if implicit is not None else "implicit not installed (rows skipped)"
    print(f"settings: data {', '.join(args.data)} (data dir {args.data_dir}); torch {torch.__version__} on "
          f"{torch.get_num_threads()} thread(s), numba on {numba_threads}; {peer}; rating model: preset "
          f"'default'; k {K}, relevant: test rating >= 4; timing: median of {TIMING_RUNS}")
    warm_up()
    for name in args.data:
        if args.tune:
            tune(name, args.data_dir)
        else:
            benchmark(name, args.data_dir, args.threads)


if __name__ == "__main__":
    main()
