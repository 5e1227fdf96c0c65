"""Every number and figure of docs/lesson.md, from one run of collabkit.

The course notes' story (../shared/seed/, told in docs/lesson.md and
docs/lesson.zh-TW.md): a dot product of embeddings, then biases and a
``y_range``, overfitting, weight decay, the ``create_params`` version,
``collab_learner``, what the model learned, and past the notes: collabkit's
tuned default and the MovieLens u1 split.

    python examples/lesson.py                 # the full run: ml-100k if found, else the bundled sample
    python examples/lesson.py --fast --out /tmp/lesson    # 1 epoch on a subsample (the test's run)
    python examples/lesson.py --step dot-bias            # one step of the story, its table printed

A full run writes into ``--out`` (default docs/figures):

* ``results.json``: every number (epoch tables, sweeps, tables, u1 RMSE);
* ``results.md``: the Markdown tables the docs quote, each after a
  ``<!-- table: NAME -->`` marker (tests/test_lesson_docs.py checks the docs against it);
* the PNG figures (800 x 500, drawn on matplotlib's Agg canvas, no display needed).

Everything is seeded (``--seed``, default 42) and trained on one thread, so a
rerun on the same machine and library versions gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import collabkit
from collabkit.datasets import load_ml_100k, load_ml_100k_split, load_ml_latest_small
from collabkit.errors import DatasetNotFoundError
from collabkit.evaluate import evaluate
from collabkit.fastai import (
    CollabDataLoaders,
    Embedding,
    Learner,
    Module,
    MSELossFlat,
    collab_learner,
    create_params,
    sigmoid_range,
)
from collabkit.interpret import item_bias_table, item_pca, plot_item_pca
from collabkit.recommend import Recommender
from collabkit.training.recipe import PRESETS, train
from collabkit.training.schedule import one_cycle

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "figures"
FAST_ROWS = 20_000  # --fast trains on this many ratings, one epoch per model
WD_SWEEP = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
PARABOLA_AS = (1, 2, 5, 10, 50)  # the fastai book's values of a in y = a·x²
WELL_KNOWN = {"ml-100k": "Star Wars (1977)", "ml-latest-small": "Star Wars: Episode IV - A New Hope (1977)"}

# u1 RMSE measured with other libraries on this kind of machine (2 cores, CPU); not computed here.
# Source: docs/benchmarks.md, section "Accuracy".
REFERENCE_U1 = {
    "fastai DotProductBias, wd=0.1": 0.934,
    "Surprise SVD++": 0.934,
    "Surprise SVD": 0.956,
}


# --- the notes' models, as the lesson writes them ------------------------------------------------
class DotProduct(Module):
    def __init__(self, n_users, n_movies, n_factors):
        self.user_factors = Embedding(n_users, n_factors)
        self.movie_factors = Embedding(n_movies, n_factors)

    def forward(self, x):
        users = self.user_factors(x[:, 0])
        movies = self.movie_factors(x[:, 1])
        return (users * movies).sum(dim=1)


class DotProductBias(Module):
    def __init__(self, n_users, n_movies, n_factors, y_range=(0, 5.5)):
        self.user_factors = Embedding(n_users, n_factors)
        self.user_bias = Embedding(n_users, 1)
        self.movie_factors = Embedding(n_movies, n_factors)
        self.movie_bias = Embedding(n_movies, 1)
        self.y_range = y_range

    def forward(self, x):
        users = self.user_factors(x[:, 0])
        movies = self.movie_factors(x[:, 1])
        res = (users * movies).sum(dim=1, keepdim=True)
        res += self.user_bias(x[:, 0]) + self.movie_bias(x[:, 1])
        return sigmoid_range(res, *self.y_range)


class DotProductBiasParams(Module):
    """The lesson's next step: the same model with its own embedding (``create_params``, indexing)."""

    def __init__(self, n_users, n_movies, n_factors, y_range=(0, 5.5)):
        self.user_factors = create_params([n_users, n_factors])
        self.user_bias = create_params([n_users])
        self.movie_factors = create_params([n_movies, n_factors])
        self.movie_bias = create_params([n_movies])
        self.y_range = y_range

    def forward(self, x):
        users = self.user_factors[x[:, 0]]
        movies = self.movie_factors[x[:, 1]]
        res = (users * movies).sum(dim=1)
        res += self.user_bias[x[:, 0]] + self.movie_bias[x[:, 1]]
        return sigmoid_range(res, *self.y_range)


# --- data -----------------------------------------------------------------------------------------
def load_ratings(data_dir: str | Path | None, data: str = "auto") -> tuple[str, pd.DataFrame]:
    """``(name, ratings with a title column)``: ml-100k where found, else the bundled ml-latest-small."""
    if data in ("auto", "ml-100k"):
        try:
            return "ml-100k", load_ml_100k(data_dir).with_titles()
        except DatasetNotFoundError:
            if data == "ml-100k":
                raise
    return "ml-latest-small", load_ml_latest_small().with_titles()


class Run:
    """What the steps share: the data, the settings, the fitted learners, the results and the figures."""

    def __init__(self, data_name: str, ratings: pd.DataFrame, out: Path, seed: int, fast: bool, data_dir) -> None:
        self.data_name, self.out, self.seed, self.fast, self.data_dir = data_name, out, seed, fast, data_dir
        if fast and len(ratings) > FAST_ROWS:
            ratings = ratings.sample(FAST_ROWS, random_state=seed).reset_index(drop=True)
        self.ratings = ratings
        self.epochs = 1 if fast else 5
        self.learners: dict[str, Learner] = {}
        self.results: dict = {}
        self.figures: list[str] = []

    def dls(self) -> CollabDataLoaders:
        """The lesson's DataLoaders, built afresh so that every model sees the same batches in the same order."""
        dls = CollabDataLoaders.from_df(self.ratings, item_name="title", bs=64, seed=self.seed)
        logging.getLogger("collabkit.data.ratings").setLevel(logging.ERROR)  # its duplicate-title warning: once
        return dls

    def fit(self, key: str, make_model: Callable, wd: float | None, wd_mode: str = "decoupled") -> Learner:
        """Fit ``make_model(n_users, n_movies)`` the lesson's way and keep its epoch table under ``key``."""
        dls = self.dls()
        n_users, n_movies = len(dls.classes[dls.user_name]), len(dls.classes["title"])
        torch.manual_seed(self.seed)
        model = make_model(n_users, n_movies)
        learn = Learner(dls, model, loss_func=MSELossFlat(), wd_mode=wd_mode)
        print(f"\n## {key}: {type(model).__name__}, wd={'default (0.01)' if wd is None else wd}, wd_mode={wd_mode}")
        started = time.perf_counter()
        learn.fit_one_cycle(self.epochs, 5e-3, wd=wd)
        self.learners[key] = learn
        self.results.setdefault("models", {})[key] = model_record(learn, wd, wd_mode, time.perf_counter() - started)
        return learn

    def learner(self, key: str) -> Learner:
        """The learner of step ``key``, training it first if this run has not."""
        if key not in self.learners:
            STEPS[MODEL_STEP[key]](self)
        return self.learners[key]

    def figure(self, name: str, fig: Figure) -> None:
        save(fig, self.out / name)
        self.figures.append(name)


def model_record(learn: Learner, wd: float | None, wd_mode: str, seconds: float) -> dict:
    rec = learn.recorder
    epochs = [
        {"epoch": k, "train_loss": row[0], "valid_loss": row[1], "time": t}
        for k, (row, t) in enumerate(zip(rec.values, rec.times))
    ]
    last = rec.values[-1]
    return {
        "model": type(learn.model).__name__,
        "wd": 0.01 if wd is None else wd,
        "wd_given": wd is not None,
        "wd_mode": wd_mode,
        "epochs": epochs,
        "train_loss": last[0],
        "valid_mse": last[1],
        "valid_rmse": math.sqrt(last[1]),
        "seconds": seconds,
    }


# --- figures --------------------------------------------------------------------------------------
def new_figure() -> Figure:
    fig = Figure(figsize=(8.0, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def barh(ax, labels, values, color) -> None:
    """Horizontal bars, first label on top."""
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color=color)
    ax.set_yticks(y)
    ax.set_yticklabels([str(s)[:34] for s in labels], fontsize=7)


# --- the steps of the story -----------------------------------------------------------------------
def step_data(run: Run) -> None:
    dls = run.dls()
    run.results["data"] = {
        "dataset": run.data_name,
        "ratings": len(run.ratings),
        "users": len(dls.classes[dls.user_name]),
        "movies": len(dls.classes["title"]),
        "train": dls.train.n,
        "valid": dls.valid.n,
    }
    print(dls)


def step_dot(run: Run) -> None:
    """The notes' first model, called as the notes call it: ``fit_one_cycle(5, 5e-3)`` (fastai's default wd)."""
    learn = run.fit("dot", lambda nu, nm: DotProduct(nu, nm, 50), wd=None)
    run.figure("losses_dot.png", loss_figure(learn, "DotProduct (no biases, no y_range)"))


def step_dot_bias(run: Run) -> None:
    """Biases and y_range, and no weight decay at all: the training loss falls, the validation loss rises."""
    learn = run.fit("dot_bias", lambda nu, nm: DotProductBias(nu, nm, 50), wd=0.0)
    run.figure("losses_dot_bias.png", loss_figure(learn, "DotProductBias, wd=0"))


def step_weight_decay(run: Run) -> None:
    """The same model with wd=0.1; the two side by side; the y = a·x² picture."""
    learn = run.fit("dot_bias_wd", lambda nu, nm: DotProductBias(nu, nm, 50), wd=0.1)
    run.figure("losses_dot_bias_wd.png", loss_figure(learn, "DotProductBias, wd=0.1"))
    no_wd = run.learner("dot_bias")
    fig = new_figure()
    left = fig.add_subplot(1, 2, 1)
    right = fig.add_subplot(1, 2, 2, sharey=left)
    for ax, lrn, title in ((left, no_wd, "wd=0: overfitting"), (right, learn, "wd=0.1: the cure")):
        lrn.recorder.plot_loss(ax=ax)
        ax.set_title(f"DotProductBias, {title}")
    top = max(max(r.valid_losses) for r in (no_wd.recorder, learn.recorder))
    left.set_ylim(0, max(1.6, top * 1.15))
    run.figure("overfitting.png", fig)

    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    x = np.linspace(-2, 2, 201)
    for a in PARABOLA_AS:
        ax.plot(x, a * x**2, label=f"a = {a}")
    ax.set_ylim(0, 10)
    ax.set_xlabel("x")
    ax.set_ylabel("y = a·x²")
    ax.set_title("the larger a, the narrower the curve")
    ax.legend()
    run.figure("parabolas.png", fig)


def embedding_norms(learn: Learner) -> tuple[float, float]:
    """Mean L2 norm of the trained user and movie factor vectors."""
    trained = learn.dls.train.x.cpu()
    users = learn.model.user_factors.weight.detach()[trained[:, 0].unique()]
    movies = learn.model.movie_factors.weight.detach()[trained[:, 1].unique()]
    return float(users.norm(dim=1).mean()), float(movies.norm(dim=1).mean())


def step_wd_sweep(run: Run) -> None:
    """How much wd shrinks the embeddings, and what that does to the validation loss."""
    rows = []
    for wd in WD_SWEEP:
        key = {0.0: "dot_bias", 0.1: "dot_bias_wd"}.get(wd)
        if key is not None:
            learn = run.learner(key)
        else:
            learn = run.fit(f"sweep_wd_{wd:g}", lambda nu, nm: DotProductBias(nu, nm, 50), wd=wd)
        user_norm, movie_norm = embedding_norms(learn)
        train_loss, valid_loss = learn.recorder.values[-1][:2]
        rows.append(
            {
                "wd": wd,
                "user_norm": user_norm,
                "movie_norm": movie_norm,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
            }
        )
    run.results["wd_sweep"] = rows
    fig = new_figure()
    pos = np.arange(len(rows))
    labels = [f"{r['wd']:g}" for r in rows]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(pos, [r["user_norm"] for r in rows], marker="o", label="users")
    ax.plot(pos, [r["movie_norm"] for r in rows], marker="o", label="movies")
    ax.set_title("mean size ‖v‖ of a factor vector")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(pos, [r["train_loss"] for r in rows], marker="o", label="train_loss")
    ax2.plot(pos, [r["valid_loss"] for r in rows], marker="o", label="valid_loss")
    ax2.set_title("loss after the last epoch")
    for a in (ax, ax2):
        a.set_xticks(pos)
        a.set_xticklabels(labels)
        a.set_xlabel("wd")
        a.legend()
    run.figure("wd_norms.png", fig)


def step_wd_modes(run: Run) -> None:
    """collabkit's three forms of weight decay, each at wd=0.1."""
    rows = []
    for mode in ("decoupled", "l2", "l2-loss"):
        if mode == "decoupled":
            learn = run.learner("dot_bias_wd")
        else:
            learn = run.fit(f"wd_mode_{mode}", lambda nu, nm: DotProductBias(nu, nm, 50), wd=0.1, wd_mode=mode)
        train_loss, valid_loss = learn.recorder.values[-1][:2]
        movie_norm = embedding_norms(learn)[1]
        rows.append({"wd_mode": mode, "movie_norm": movie_norm, "train_loss": train_loss, "valid_loss": valid_loss})
    run.results["wd_modes"] = rows


def step_schedule(run: Run) -> None:
    """fit_one_cycle's schedule (fastai's defaults) against torch's OneCycleLR defaults, on one chart."""
    learn = run.learner("dot_bias_wd")
    total = len(learn.recorder.lrs)
    lr_max = 5e-3
    curves = {}
    for name in ("fastai", "torch"):
        param = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([param], lr=lr_max)
        if name == "fastai":
            sched = one_cycle(opt, lr_max, total)
        else:
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr_max, total_steps=total)
        lrs, moms = [], []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            moms.append(opt.param_groups[0]["betas"][0])
            opt.step()
            sched.step()
        curves[name] = (np.array(lrs), np.array(moms))
    fastai_lrs = curves["fastai"][0]
    recorded = np.array(learn.recorder.lrs)
    mismatch = float(np.max(np.abs(recorded - fastai_lrs) / fastai_lrs))

    shape = {}
    for name, (lrs, moms) in curves.items():
        shape[name] = {
            "start_lr": float(lrs[0]),
            "peak_step": int(np.argmax(lrs)),
            "peak_lr": float(lrs.max()),
            "final_lr": float(lrs[-1]),
            "mom_start": float(moms[0]),
            "mom_min": float(moms.min()),
            "mom_end": float(moms[-1]),
        }
    run.results["schedule"] = {
        "lr_max": lr_max,
        "total_steps": total,
        "recorded_vs_fastai_max_rel_diff": mismatch,
        **shape,
    }

    fig = new_figure()
    steps = np.arange(total)
    panels = [fig.add_subplot(2, 2, 1), fig.add_subplot(2, 2, 2), fig.add_subplot(2, 1, 2)]
    styles = {
        "fastai": {"label": "fit_one_cycle (fastai defaults)"},
        "torch": {"label": "OneCycleLR defaults", "ls": "--"},
    }
    for name, (lrs, moms) in curves.items():
        panels[0].plot(steps, lrs, **styles[name])
        panels[1].semilogy(steps, lrs, **styles[name])
        panels[2].plot(steps, moms, **styles[name])
    panels[0].set_title(f"learning rate (lr_max = {lr_max:g})")
    panels[1].set_title("learning rate, log scale")
    panels[2].set_title("momentum (Adam β₁)")
    panels[2].set_xlabel(f"batch ({total} in all)")
    panels[0].legend(fontsize=7)
    panels[2].legend(fontsize=7)
    run.figure("one_cycle_vs_torch.png", fig)


def step_params(run: Run) -> None:
    """The lesson's own embedding module: create_params and plain indexing, wd=0.1."""
    learn = run.fit("params", lambda nu, nm: DotProductBiasParams(nu, nm, 50), wd=0.1)
    run.figure("losses_params.png", loss_figure(learn, "DotProductBias with create_params, wd=0.1"))


def step_collab_learner(run: Run) -> None:
    """fastai's ready-made model, then what it learned: biases, PCA, similar movies."""
    dls = run.dls()
    torch.manual_seed(run.seed)
    learn = collab_learner(dls, n_factors=50, y_range=(0, 5.5))
    print("\n## collab_learner: EmbeddingDotBias, wd=0.1")
    started = time.perf_counter()
    learn.fit_one_cycle(run.epochs, 5e-3, wd=0.1)
    run.learners["collab_learner"] = learn
    run.results.setdefault("models", {})["collab_learner"] = model_record(
        learn, 0.1, "decoupled", time.perf_counter() - started
    )
    run.figure("losses_collab_learner.png", loss_figure(learn, "collab_learner (EmbeddingDotBias), wd=0.1"))

    rec = collabkit.Recommender.from_learner(learn, titles={t: t for t in dls.items})  # the items are titles
    lowest, highest = item_bias_table(rec, 10)
    run.results["bias"] = {
        "lowest": lowest[["title", "ratings", "bias"]].to_dict("records"),
        "highest": highest[["title", "ratings", "bias"]].to_dict("records"),
    }
    fig = new_figure()
    ax = fig.add_subplot(1, 2, 1)
    barh(ax, lowest["title"], lowest["bias"], "tab:red")
    ax.set_title("lowest bias", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    barh(ax2, highest["title"], highest["bias"], "tab:green")
    ax2.set_title("highest bias", fontsize=9)
    run.figure("bias.png", fig)

    pca = item_pca(rec, n_components=3)
    plot_item_pca(pca, run.out / "item_pca.png")
    run.figures.append("item_pca.png")
    ends = {}
    for c in (1, 2):
        low, high = pca.extremes(c, 5)
        ends[f"pc{c}"] = {"low": list(low["title"]), "high": list(high["title"])}
    run.results["pca"] = {"explained": [float(v) for v in pca.explained], **ends}

    movie = WELL_KNOWN[run.data_name]
    if movie not in set(dls.classes["title"]):
        movie = str(rec.items.ids[int(np.argmax(rec.history.item_counts))])
    similar = rec.similar_items(movie, n=10)
    run.results["similar"] = {"movie": movie, "rows": similar[["title", "similarity"]].to_dict("records")}
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    barh(ax, similar["title"], similar["similarity"], "tab:blue")
    ax.set_xlabel("cosine similarity of the factor vectors")
    ax.set_title(f"similar_items({movie!r})", fontsize=9)
    run.figure("similar_items.png", fig)


def step_default(run: Run) -> None:
    """collabkit's tuned default (Bayesian PMF) on the lesson's own 80/20 split."""
    dls = run.dls()
    train_frame = dls.decode(dls.train.x, dls.train.y)
    valid_frame = dls.decode(dls.valid.x, dls.valid.y)
    config = PRESETS["default"]
    if run.fast:
        config = config.replace(sweeps=12, burn_in=4)
    print(f"\n## default preset: {config}")
    started = time.perf_counter()
    learn = train(config, train_frame, valid_frame, duplicates="keep")
    seconds = time.perf_counter() - started
    preds, targs = learn.get_preds()
    mse = float(((preds - targs) ** 2).mean())
    run.results.setdefault("models", {})["default"] = {
        "model": "Bayesian PMF (preset default)",
        "train_loss": None,
        "valid_mse": mse,
        "valid_rmse": math.sqrt(mse),
        "seconds": seconds,
        "epochs": [],
    }
    print(f"valid MSE {mse:.4f}, RMSE {math.sqrt(mse):.4f}, {seconds:.1f} s")


def step_u1(run: Run) -> None:
    """The default and the lesson presets on ML-100K's u1 split (u1.base -> u1.test), the benchmarks' number."""
    try:
        base, test = load_ml_100k_split("u1", run.data_dir)
    except DatasetNotFoundError:
        run.results["u1"] = None
        print("\n## u1: ml-100k is absent, skipped")
        return
    columns = ["user", "movie", "rating"]
    rows = {}
    for preset in ("default", "lesson"):
        config = PRESETS[preset]
        if run.fast:
            config = config.replace(sweeps=12, burn_in=4) if preset == "default" else config.replace(epochs=1)
        started = time.perf_counter()
        learn = train(config, base.ratings[columns], test.ratings[columns])
        seconds = time.perf_counter() - started
        preds, targs = learn.get_preds()
        rows[preset] = {"rmse": float(((preds - targs) ** 2).mean().sqrt()), "seconds": seconds}
        print(f"\n## u1, preset {preset}: RMSE {rows[preset]['rmse']:.4f} ({seconds:.1f} s)")
    run.results["u1"] = rows


def step_ranking(run: Run) -> None:
    """The lesson's model as a recommender: ranked by predicted rating, against a ranking model (EASE) and
    the most-popular chart, on the lesson's validation split (relevant: a validation rating of 4 or more)."""
    learn = run.learner("collab_learner")  # collabkit's own DotProductBias: a Recommender can read its vectors
    dls = learn.dls
    train_frame, valid_frame = dls.decode(dls.train.x, dls.train.y), dls.decode(dls.valid.x, dls.valid.y)
    rec = Recommender.from_learner(learn).fit_ranker("ease")
    counts = rec.history.item_counts
    trained_users = np.flatnonzero(rec.user_trained)
    rows: dict[str, dict] = {"popular": {}}
    for key, rank_by in (("rating", "rating"), ("ease", "ranking")):
        metrics = evaluate(rec, train_frame, valid_frame, rank_by=rank_by).set_index("metric")
        _, top = rec.top_n(trained_users, 10, exclude=rec.history, rank_by=rank_by)
        rows[key] = {"precision": float(metrics.loc["precision@10", "value"]),
                     "ndcg": float(metrics.loc["ndcg@10", "value"]),
                     "median_ratings": float(np.median(counts[top]))}
        if key == "rating":
            chart_top = np.argsort(-counts, kind="stable")[:10]
            rows["popular"] = {"precision": float(metrics.loc["precision@10", "popularity"]),
                               "ndcg": float(metrics.loc["ndcg@10", "popularity"]),
                               "median_ratings": float(np.median(counts[chart_top]))}
    user = rec.users[int(trained_users[0])]
    example = {key: rec.recommend([user], n=5, rank_by=how)["item"].tolist()
               for key, how in (("rating", "rating"), ("ease", "ranking"))}
    example_counts = {key: [int(counts[rec.items.index([t])[0]]) for t in titles] for key, titles in example.items()}
    run.results["ranking"] = {"rows": rows, "user": user, "example": example, "example_counts": example_counts}
    for key, r in rows.items():
        print(f"\n## ranking by {key}: precision@10 {r['precision']:.4f}, NDCG@10 {r['ndcg']:.4f}, "
              f"median ratings of a top-10 film {r['median_ratings']:.0f}")


STEPS: dict[str, Callable[[Run], None]] = {
    "data": step_data,
    "dot": step_dot,
    "dot-bias": step_dot_bias,
    "weight-decay": step_weight_decay,
    "wd-sweep": step_wd_sweep,
    "wd-modes": step_wd_modes,
    "schedule": step_schedule,
    "params": step_params,
    "collab-learner": step_collab_learner,
    "default": step_default,
    "u1": step_u1,
    "ranking": step_ranking,
}
MODEL_STEP = {"dot": "dot", "dot_bias": "dot-bias", "dot_bias_wd": "weight-decay", "collab_learner": "collab-learner"}


def loss_figure(learn: Learner, title: str) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    learn.recorder.plot_loss(ax=ax)
    ax.set_title(f"{title}: training and validation loss")
    return fig


# --- Markdown -------------------------------------------------------------------------------------
STORY = [  # (key, what the docs call it)
    ("dot", "DotProduct"),
    ("dot_bias", "DotProductBias, wd=0"),
    ("dot_bias_wd", "DotProductBias, wd=0.1"),
    ("params", "create_params, wd=0.1"),
    ("collab_learner", "collab_learner, wd=0.1"),
    ("default", "preset default (Bayesian PMF)"),
]


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; columns of numbers are right-aligned."""

    def numeric(k: int) -> bool:
        return all(re.fullmatch(r"[-+0-9.e:–]+", str(row[k])) for row in rows)

    align = ["---:" if k > 0 and numeric(k) else "---" for k in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def clock(seconds: float) -> str:
    """fastai's time column: mm:ss.ss."""
    return f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"


def tables(results: dict) -> dict[str, str]:
    """Every table the docs quote, by name, rendered from ``results`` (a loaded results.json)."""
    out = {}
    data = results["data"]
    out["data"] = md_table(
        ["dataset", "ratings", "users", "movies (titles)", "train", "valid"],
        [[data["dataset"], data["ratings"], data["users"], data["movies"], data["train"], data["valid"]]],
    )
    models = results["models"]
    for key in ("dot", "dot_bias", "dot_bias_wd", "params", "collab_learner"):
        rows = [
            [e["epoch"], f"{e['train_loss']:.6f}", f"{e['valid_loss']:.6f}", clock(e["time"])]
            for e in models[key]["epochs"]
        ]
        out[f"epochs_{key}"] = md_table(["epoch", "train_loss", "valid_loss", "time"], rows)
    rows = []
    for key, label in STORY:
        m = models[key]
        train_loss = "–" if key == "default" else f"{m['train_loss']:.4f}"
        rows.append([label, train_loss, f"{m['valid_mse']:.4f}", f"{m['valid_rmse']:.4f}", f"{m['seconds']:.1f}"])
    out["story"] = md_table(["model", "train_loss", "valid MSE", "valid RMSE", "fit (s)"], rows)
    out["wd_sweep"] = md_table(
        ["wd", "mean ‖user vector‖", "mean ‖movie vector‖", "train_loss", "valid_loss"],
        [
            [
                f"{r['wd']:g}",
                f"{r['user_norm']:.3f}",
                f"{r['movie_norm']:.3f}",
                f"{r['train_loss']:.4f}",
                f"{r['valid_loss']:.4f}",
            ]
            for r in results["wd_sweep"]
        ],
    )
    out["wd_modes"] = md_table(
        ["wd_mode", "mean ‖movie vector‖", "train_loss", "valid_loss"],
        [
            [f"`{r['wd_mode']}`", f"{r['movie_norm']:.3f}", f"{r['train_loss']:.4f}", f"{r['valid_loss']:.4f}"]
            for r in results["wd_modes"]
        ],
    )
    s = results["schedule"]
    f, t = s["fastai"], s["torch"]
    out["schedule"] = md_table(
        ["", "fit_one_cycle (fastai defaults)", "OneCycleLR defaults"],
        [
            ["steps", s["total_steps"], s["total_steps"]],
            ["start lr", f"{f['start_lr']:.2e}", f"{t['start_lr']:.2e}"],
            ["peak lr at step", f"{f['peak_step']}", f"{t['peak_step']}"],
            ["peak lr", f"{f['peak_lr']:.2e}", f"{t['peak_lr']:.2e}"],
            ["final lr", f"{f['final_lr']:.2e}", f"{t['final_lr']:.2e}"],
            [
                "momentum start / lowest / end",
                f"{f['mom_start']:.2f} / {f['mom_min']:.2f} / {f['mom_end']:.2f}",
                f"{t['mom_start']:.2f} / {t['mom_min']:.2f} / {t['mom_end']:.2f}",
            ],
        ],
    )
    for side in ("lowest", "highest"):
        out[f"bias_{side}"] = md_table(
            ["title", "ratings", "bias"],
            [[r["title"], r["ratings"], f"{r['bias']:.3f}"] for r in results["bias"][side]],
        )
    pca = results["pca"]
    out["pca"] = md_table(
        ["end", "movies"],
        [[f"pc{c} {end}", "; ".join(pca[f"pc{c}"][end])] for c in (1, 2) for end in ("low", "high")],
    )
    sim = results["similar"]
    out["similar"] = md_table(["title", "similarity"], [[r["title"], f"{r['similarity']:.3f}"] for r in sim["rows"]])
    u1 = results.get("u1")
    rows = []
    if u1:
        rows += [
            [
                "collabkit, preset default (Bayesian PMF)",
                f"{u1['default']['rmse']:.4f}",
                f"{u1['default']['seconds']:.1f}",
            ],
            [
                "collabkit, preset lesson (DotProductBias, wd=0.1)",
                f"{u1['lesson']['rmse']:.4f}",
                f"{u1['lesson']['seconds']:.1f}",
            ],
        ]
    rows += [[f"{name} (docs/benchmarks.md)", f"{value:.3f}", "–"] for name, value in REFERENCE_U1.items()]
    out["u1"] = md_table(["model", "u1 RMSE", "fit (s)"], rows)
    ranking = results["ranking"]
    labels = {"popular": "most popular (the same chart for everyone)",
              "rating": "the lesson's collab_learner (wd=0.1), highest predicted rating first",
              "ease": "EASE, a ranking model of who rated what"}
    out["ranking"] = md_table(
        ["top 10 from", "precision@10", "NDCG@10", "median ratings of a top-10 film"],
        [[labels[k], f"{r['precision']:.4f}", f"{r['ndcg']:.4f}", f"{r['median_ratings']:.0f}"]
         for k, r in ranking["rows"].items()],
    )
    ex, n = ranking["example"], ranking["example_counts"]
    out["ranking_example"] = md_table(
        ["rank", "by predicted rating", "ratings", "by EASE", "ratings"],
        [[k + 1, ex["rating"][k], n["rating"][k], ex["ease"][k], n["ease"][k]] for k in range(len(ex["rating"]))],
    )
    return out


def write_markdown(results: dict, path: Path) -> None:
    parts = [f"# Tables of the lesson run ({results['data']['dataset']}, seed {results['seed']})", ""]
    for name, table in tables(results).items():
        parts += [f"<!-- table: {name} -->", table, ""]
    path.write_text("\n".join(parts), encoding="utf-8")


def summary(results: dict, out: Path) -> str:
    models = results["models"]
    lines = [
        f"lesson run on {results['data']['dataset']} ({'fast' if results['fast'] else 'full'}), seed {results['seed']}:"
    ]
    for key, label in STORY:
        lines.append(f"  {label:34s} valid MSE {models[key]['valid_mse']:.4f}  RMSE {models[key]['valid_rmse']:.4f}")
    if results.get("u1"):
        lines.append(
            f"  u1 RMSE: default {results['u1']['default']['rmse']:.4f}, lesson {results['u1']['lesson']['rmse']:.4f}"
        )
    lines.append(
        f"  similar to {results['similar']['movie']!r}: "
        + ", ".join(r["title"] for r in results["similar"]["rows"][:3])
    )
    lines.append(f"  {len(results['figures'])} figures in {out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the figures and results go (default docs/figures; --fast needs one)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("COLLABKIT_DATA_DIR", str(REPO.parent / "shared" / "data")),
        help="a folder holding ml-100k (default $COLLABKIT_DATA_DIR or ../shared/data)",
    )
    parser.add_argument(
        "--data",
        choices=("auto", "ml-100k", "ml-latest-small"),
        default="auto",
        help="auto: ml-100k where found, else the bundled ml-latest-small",
    )
    parser.add_argument(
        "--fast", action="store_true", help=f"one epoch on {FAST_ROWS:,} ratings, short samplers (for tests)"
    )
    parser.add_argument(
        "--step", choices=list(STEPS), help="run one step of the story (and what it needs); no results files"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.out is None:
        if args.fast:
            parser.error("--fast needs --out DIR: docs/figures holds the full run that the docs quote")
        args.out = DEFAULT_OUT

    torch.set_num_threads(1)
    data_name, ratings = load_ratings(args.data_dir, args.data)
    run = Run(data_name, ratings, args.out, args.seed, args.fast, args.data_dir)
    started = time.perf_counter()
    for name in [args.step] if args.step else list(STEPS):
        STEPS[name](run)
    if args.step:
        print(f"\nstep {args.step}: wrote {', '.join(run.figures) or 'no figures'} to {args.out}")
        return run.results

    results = {
        "seed": args.seed,
        "fast": args.fast,
        "collabkit": collabkit.__version__,
        "torch": torch.__version__,
        "seconds": time.perf_counter() - started,
        **run.results,
        "figures": run.figures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_markdown(results, args.out / "results.md")
    print("\n" + summary(results, args.out))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
