"""What every registered solver and every registered rating model must do, in the style of LensKit's
ScorerTests: a new one is added to its registry and to the small tables here, and these tests run it.

(Every registered ranker has its own suite in test_ranking.py.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from planted import planted_ratings

from collabkit import CollabDataLoaders, Learner, Recommender
from collabkit.models.registry import RATING_MODELS
from collabkit.training import Callback
from collabkit.training.recipe import TrainConfig, train
from collabkit.training.solvers import SOLVERS, options

QUICK = {"sgd": {"epochs": 3, "lr": 2e-2, "bs": 256}, "bayes": {"sweeps": 8, "burn_in": 2},
         "bayes-svdpp": {"sweeps": 10, "burn_in": 2, "thin": 2}, "sparse": {"epochs": 4}}
"""Settings that fit each solver on the planted data in about a second."""

EXAMPLES = {
    "DotProduct": lambda n_users, n_items: RATING_MODELS["DotProduct"](n_users, n_items, 4, (0, 6)),
    "DotProductBias": lambda n_users, n_items: RATING_MODELS["DotProductBias"](n_users, n_items, 4, (0, 6)),
    "EmbeddingNN": lambda n_users, n_items: RATING_MODELS["EmbeddingNN"]([(n_users, 5), (n_items, 5)], layers=[8],
                                                                          y_range=(0, 6)),
}
"""A small instance of each rating model, for the vocabularies' sizes."""


@pytest.fixture(scope="module")
def planted():
    frame = planted_ratings(n_users=150, n_items=100, density=0.3, seed=4).sample(frac=1.0, random_state=0)
    cut = int(len(frame) * 0.8)
    return frame.iloc[:cut], frame.iloc[cut:]


def test_every_registered_solver_and_model_has_an_entry_here():
    assert set(QUICK) == set(SOLVERS) and set(EXAMPLES) == set(RATING_MODELS)


class Trace(Callback):
    def __init__(self):
        self.events = []

    def before_fit(self, learn, n_epoch):
        self.events.append("before_fit")

    def before_epoch(self, learn, epoch):
        self.events.append("before_epoch")

    def after_epoch(self, learn, epoch):
        self.events.append("after_epoch")

    def after_fit(self, learn):
        self.events.append("after_fit")


@pytest.mark.parametrize("name", list(SOLVERS))
def test_a_solver_honours_the_callbacks_validates_like_the_learner_and_saves(planted, tmp_path, name):
    train_frame, valid_frame = planted
    trace = Trace()
    learn = train(TrainConfig(solver=name, n_factors=4, seed=0, **QUICK[name]), train_frame, valid_frame, cbs=[trace])
    rows = learn.recorder.values
    assert trace.events == ["before_fit", *["before_epoch", "after_epoch"] * len(rows), "after_fit"] and rows
    assert learn.recorder.metric_names == ["train_loss", "valid_loss", "rmse"]
    valid_loss, valid_rmse = learn.validate()
    assert rows[-1][1] == pytest.approx(valid_loss, rel=1e-4)  # the last row is the model it ends with
    assert rows[-1][2] == pytest.approx(valid_rmse, rel=1e-4)
    assert valid_rmse < 0.8 * float(valid_frame["rating"].std())  # it learned something

    rec = Recommender.from_learner(learn)
    rec.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    users, items = valid_frame["user"].to_numpy()[:50], valid_frame["item"].to_numpy()[:50]
    np.testing.assert_allclose(loaded.predict_values(users, items)[0], rec.predict_values(users, items)[0], rtol=1e-5)


READS = {
    "sgd": {"bs", "epochs", "layers", "lr", "model", "n_factors", "patience", "wd", "wd_mode", "y_range"},
    "bayes": {"burn_in", "n_factors", "sweeps", "thin"},
    "bayes-svdpp": {"burn_in", "n_factors", "sweeps", "thin"},
    "sparse": {"bs", "epochs", "lr", "n_factors", "wd"},
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_a_solver_has_frozen_settings_of_its_own_and_refuses_options_it_does_not_read(name):
    solver = SOLVERS[name]
    settings = TrainConfig(solver=name).settings()
    assert isinstance(settings, solver.settings_class) and solver.settings_class.__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n_factors = 3
    record = TrainConfig(solver=name).record()
    assert record["solver"] == name and set(record) == {"solver", "seed", "threads", *options(solver)}
    assert set(options(solver)) == READS[name]  # written out: what each solver's settings class reads
    for other in {o for s in SOLVERS.values() for o in options(s)} - set(options(solver)):
        value = {"layers": (4,), "y_range": (0.0, 5.0), "model": "dot", "wd_mode": "l2"}.get(other, 2)
        with pytest.raises(ValueError, match=f"{other} does not apply to the {name} solver"):
            TrainConfig(solver=name, **{other: value})


def test_each_solver_starts_from_its_own_defaults_not_another_solvers():
    """TrainConfig(solver="sparse") used AdamW's lr 5e-3 and wd 0.1 as Adagrad's step and L2 penalty."""
    assert (TrainConfig(solver="sparse").settings().lr, TrainConfig(solver="sparse").settings().reg) == (0.05, 0.02)
    assert TrainConfig(solver="bayes").settings().n_factors == 10 and TrainConfig().settings().n_factors == 50


@pytest.mark.parametrize("name", list(RATING_MODELS))
def test_a_rating_model_rebuilds_from_its_config_trains_and_round_trips(planted, tmp_path, name):
    train_frame, valid_frame = planted
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_frames(train_frame, valid_frame, bs=256, seed=0)
    model = EXAMPLES[name](len(dls.users), len(dls.items))
    twin = type(model)(**model.config())
    assert twin.config() == model.config() and {k: v.shape for k, v in twin.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    out = model(dls.train.x[:7])
    assert out.shape == (7,) and torch.isfinite(out).all()

    learn = Learner(dls, model, progress=False)
    learn.fit_one_cycle(2, 2e-2)
    rec = Recommender.from_learner(learn)
    rec.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert type(loaded.model) is type(model)
    users, items = valid_frame["user"].to_numpy()[:40], valid_frame["item"].to_numpy()[:40]
    preds, fallback = loaded.predict_values(users, items)
    np.testing.assert_allclose(preds, rec.predict_values(users, items)[0], rtol=1e-5)
    assert (fallback == "").all()  # every pair is of trained ids
    assert preds.min() >= 0 and preds.max() <= 6  # its y_range
    top = loaded.recommend([users[0]], n=5)
    assert len(top) == 5 and top["score"].is_monotonic_decreasing
