"""Small saved models for the page and its endpoints (tests/test_page.py, tests/test_page_api.py)."""

from __future__ import annotations

from pathlib import Path

from planted import planted_clusters, planted_interactions

from collabkit.recommend import Recommender
from collabkit.training.recipe import TrainConfig, train


def rating_model(folder: Path, seed: int = 0) -> Recommender:
    """DotProductBias (8 factors, 3 epochs) on planted clusters, with the default ranker, titles
    ("Group G film I") and a training record naming the bundled dataset (for its license on the model card)."""
    frame, _, _ = planted_clusters(seed=seed)
    learn = train(TrainConfig(epochs=3, bs=256, lr=3e-2, n_factors=8, y_range=(0, 6), seed=seed),
                  frame[["user", "item", "rating"]])
    titles = dict(zip(frame["item"], frame["title"]))
    rec = Recommender.from_learner(learn, titles=titles, info={
        "data": "ml-latest-small", "feedback": "explicit", "trained_at": "2026-01-01T00:00:00Z",
        "recorder": learn.recorder.to_dict(), "valid_rmse": 0.5, "valid_mae": 0.4,
    })
    rec.fit_ranker()
    rec.info["valid_ranking"] = {"precision@10": 0.3, "ndcg@10": 0.35}
    rec.save(folder)
    return Recommender.load(folder)


def implicit_model(folder: Path) -> Recommender:
    """EASE only, on planted plays: a model with no item factors (no taste map) that rates nothing."""
    plays, _, _ = planted_interactions()
    titles = {item: f"Group {item // 25} film {item}" for item in plays["item"].unique()}
    rec = Recommender.from_interactions(plays, weight_col="plays", titles=titles, ranker="ease",
                                        info={"data": "planted plays", "feedback": "implicit"})
    rec.save(folder)
    return Recommender.load(folder)
