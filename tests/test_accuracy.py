"""Accuracy on real MovieLens splits (skipped where ../shared/data is absent)."""

import pytest

from collabkit.datasets import load_ml_100k_split
from collabkit.metrics import rmse
from collabkit.training.bayes import BayesConfig
from collabkit.training.recipe import PRESETS, train


def test_default_preset_reaches_the_u1_target(ml100k_dir):
    """The default (Bayesian PMF) on ML-100K u1.base -> u1.test: RMSE <= 0.910 (fastai 0.934, Surprise SVD++ 0.934)."""
    base, test = load_ml_100k_split("u1", ml100k_dir)
    columns = ["user", "movie", "rating"]
    learn = train(PRESETS["default"], base.ratings[columns], test.ratings[columns])
    preds, targs = learn.get_preds()
    assert rmse(preds, targs) <= 0.910
    assert learn.recorder.values[-1][2] == pytest.approx(rmse(preds, targs), rel=1e-5)


def test_bayes_config_is_checked():
    with pytest.raises(ValueError, match="burn_in must be in"):
        BayesConfig(sweeps=10, burn_in=10)
    assert BayesConfig(sweeps=200, burn_in=50, thin=2).kept == 75
