"""The estimator front door: settings in the constructor, fit(ratings) -> Recommender, same results as the recipes."""

from __future__ import annotations

import numpy as np
import pytest
from planted import planted_ratings

import collabkit as ck
from collabkit.training.recipe import PRESETS, train


@pytest.fixture(scope="module")
def frames():
    frame = planted_ratings(n_users=120, n_items=80, seed=3)
    valid = frame.sample(frac=0.2, random_state=0)
    return frame.drop(valid.index), valid


def test_bayesian_mf_is_the_default_recipe_and_ranks_too(frames):
    train_frame, valid = frames
    rec = ck.BayesianMF(sweeps=12, burn_in=3).fit(train_frame, valid)
    learn = train(PRESETS["default"].replace(sweeps=12, burn_in=3), train_frame, valid)
    users, items = valid["user"].tolist()[:50], valid["item"].tolist()[:50]
    expected = ck.Recommender.from_learner(learn).predict(users, items)["prediction"]
    np.testing.assert_allclose(rec.predict(users, items)["prediction"], expected, rtol=1e-5)
    assert rec.ranker is not None and rec.ranker.name == "ease" and len(rec.recommend([users[0]], n=5)) == 5
    assert rec.info["config"]["sweeps"] == 12


def test_mf_is_the_lessons_recipe(frames):
    train_frame, valid = frames
    rec = ck.MF(n_factors=8, epochs=2, lr=1e-2, bs=256, ranker=None).fit(train_frame, valid)
    assert type(rec.model).__name__ == "DotProductBias" and rec.model.u_weight.weight.shape[1] == 8
    assert rec.ranker is None and rec.info["config"]["solver"] == "sgd"
    truth = valid["rating"].to_numpy()
    preds = rec.predict(valid["user"], valid["item"])["prediction"].to_numpy()
    assert np.sqrt(np.mean((preds - truth) ** 2)) < np.std(truth)  # better than the mean rating


def test_settings_are_checked_in_the_constructor():
    with pytest.raises(ValueError, match="burn_in"):
        ck.BayesianMF(sweeps=5, burn_in=10)
    with pytest.raises(ValueError, match="n_factors must be a positive integer"):
        ck.MF(n_factors=0)
