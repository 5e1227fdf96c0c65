"""Early stopping and keeping the best epoch (fastai's EarlyStoppingCallback and SaveModelCallback)."""

from __future__ import annotations

import copy

import pytest
import torch
from planted import planted_ratings

from collabkit import CollabDataLoaders, DotProductBias, Learner
from collabkit.cli import main
from collabkit.training import Callback, EarlyStoppingCallback, ProgressCallback, SaveModelCallback


class PlantedValidLoss(Callback):
    """Overwrites each epoch's valid_loss with a planned value, and keeps a copy of each epoch's weights."""

    def __init__(self, losses):
        self.losses, self.weights = list(losses), []

    def after_epoch(self, learn, epoch):
        learn.recorder.values[-1][1] = self.losses[epoch]
        self.weights.append(copy.deepcopy(learn.model.state_dict()))


def _learner(frame, fast=True, valid_pct=0.2):
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_df(frame, valid_pct=valid_pct, seed=0, bs=256)
    return Learner(dls, DotProductBias(len(dls.users), len(dls.items), 8, (0, 6)), progress=False, fast=fast)


@pytest.fixture(scope="module")
def small():
    return planted_ratings(n_users=120, n_items=80, density=0.3)


@pytest.mark.parametrize("fast", [True, False], ids=["fused-loop", "autograd"])
def test_stops_after_patience_epochs_without_improvement_and_keeps_the_best(small, fast):
    learn = _learner(small, fast)
    planted = PlantedValidLoss([3.0, 2.0, 2.5, 2.6, 1.0, 0.5])  # best so far in epoch 1; 2 and 3 are worse
    stop, keep = EarlyStoppingCallback(patience=2), SaveModelCallback()
    learn.fit(6, 1e-2, cbs=[planted, stop, keep])
    assert len(learn.recorder.values) == 4 and stop.stopped_epoch == 3  # epochs 0..3 ran; 4 and 5 did not
    assert keep.best_epoch == 1
    for name, value in learn.model.state_dict().items():
        torch.testing.assert_close(value, planted.weights[1][name])
        assert not torch.equal(value, planted.weights[3][name])


def test_without_save_model_the_last_epochs_weights_stay(small):
    learn = _learner(small)
    planted = PlantedValidLoss([1.0, 2.0, 3.0])
    learn.fit(5, 1e-2, cbs=[planted, EarlyStoppingCallback(patience=2)])
    assert len(learn.recorder.values) == 3
    for name, value in learn.model.state_dict().items():
        torch.testing.assert_close(value, planted.weights[2][name])


def test_min_delta_and_a_metric_where_higher_is_better(small):
    learn = _learner(small)
    planted = PlantedValidLoss([1.0, 0.999, 0.998, 0.5])  # improvements smaller than min_delta do not count
    stop = EarlyStoppingCallback(patience=2, min_delta=0.01)
    learn.fit(4, 1e-2, cbs=[planted, stop])
    assert stop.stopped_epoch == 2

    learn = _learner(small)
    keep = SaveModelCallback(monitor="train_loss", higher_is_better=True)
    learn.fit(3, 1e-2, cbs=[keep])
    losses = [row[0] for row in learn.recorder.values]
    assert keep.best_epoch == losses.index(max(losses))


def test_the_stopped_epoch_still_reaches_every_callback(small, capsys):
    learn = _learner(small)
    learn.fit(5, 1e-2, cbs=[PlantedValidLoss([1.0, 2.0, 3.0]), EarlyStoppingCallback(patience=1),
                            ProgressCallback(bar=False)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert [int(line.split()[0]) for line in rows] == [0, 1]  # the table shows the epoch that stopped the fit


def test_real_overfitting_stops_early_and_ends_at_the_best_validation_loss(small):
    learn = _learner(small)
    learn.fit(20, 5e-2, wd=0.0, cbs=[EarlyStoppingCallback(patience=2), SaveModelCallback()])
    valid = [row[1] for row in learn.recorder.values]
    assert len(valid) < 20  # 8 factors, no weight decay and a high rate overfit 24 ratings per user
    assert learn.validate()[0] == pytest.approx(min(valid), rel=1e-5)
    assert learn.validate()[0] < valid[-1]


@pytest.mark.parametrize(("cb", "valid_pct", "message"), [
    (EarlyStoppingCallback(monitor="accuracy"), 0.2, "does not record"),
    (SaveModelCallback(), 0.0, "no validation split"),
])
def test_bad_settings_are_refused_before_training(small, cb, valid_pct, message):
    learn = _learner(small, valid_pct=valid_pct)
    with pytest.raises(ValueError, match=message):
        learn.fit(2, 1e-2, cbs=[cb])
    assert learn.recorder.values == []
    with pytest.raises(ValueError, match="patience"):
        EarlyStoppingCallback(patience=0)


@pytest.fixture(scope="module")
def overfit_csv(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("early") / "ratings.csv"
    small.assign(rating=small["rating"].clip(0.5, 5.0)).to_csv(path, index=False)
    return path


def test_cli_early_stop_reports_the_kept_epoch_and_the_model_predicts_with_it(overfit_csv, tmp_path, capsys):
    from collabkit import Recommender

    args = ["train", "--data", str(overfit_csv), "--preset", "lesson", "--epochs", "20", "--lr", "0.05",
            "--wd", "0", "--n-factors", "8", "--bs", "256", "--early-stop", "2", "--ranker", "none",
            "--no-progress", "--out", str(tmp_path / "m")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "early stopping: stopped after epoch" in out and "kept the weights of epoch" in out
    rec = Recommender.load(tmp_path / "m")
    rmses = [row[2] for row in rec.info["recorder"]["values"]]
    assert len(rmses) < 20 and rec.info["config"]["patience"] == 2
    assert rec.info["valid_rmse"] == pytest.approx(min(rmses), abs=2e-3)  # (the saved one is clipped to the scale)


@pytest.mark.parametrize(("extra", "message"), [
    (["--solver", "bayes"], "--early-stop does not apply to the bayes solver"),
    (["--valid-pct", "0"], "needs validation rows"),
    (["--nproc", "2"], "runs in one process"),
    (["--split", "u1"], "are that split's test set"),
])
def test_cli_early_stop_refusals(overfit_csv, capsys, extra, message):
    status = main(["train", "--data", str(overfit_csv), "--early-stop", "2", "--epochs", "3", *extra])
    err = capsys.readouterr().err
    assert status != 0 and message in err and "Traceback" not in err


def test_early_stopping_never_chooses_epochs_on_a_test_set(overfit_csv, tmp_path, capsys, small):
    """cv took --early-stop and chose each fold's epoch on its test fold; --resume took it and did not stop."""
    from collabkit.evaluate import cross_validate
    from collabkit.training.recipe import TrainConfig

    assert main(["cv", "--data", str(overfit_csv), "--preset", "lesson", "--early-stop", "1", "--folds", "2"]) == 1
    assert "each fold's epoch on its test fold" in capsys.readouterr().err
    with pytest.raises(ValueError, match="test fold"):
        cross_validate(TrainConfig(patience=1), small, folds=2)
    assert main(["train", "--data", str(overfit_csv), "--preset", "lesson", "--early-stop", "1", "--resume",
                 "--checkpoint", str(tmp_path / "ck.pt")]) == 1
    assert "does not carry over a --resume" in capsys.readouterr().err
