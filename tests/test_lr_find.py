import numpy as np
import pytest
import torch

from collabkit import CollabDataLoaders, DotProductBias, Learner
from collabkit.training.lr_find import minimum, valley


def test_valley_sits_in_the_middle_of_the_longest_fall():
    lrs = np.logspace(-6, 0, 13)
    #                  rising ....... falling from index 2 to 8 ............ blow-up
    losses = np.array([0.8, 0.85, 1.01, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.45, 0.9, 3.0, 9.0])
    assert valley(lrs, losses) == pytest.approx(lrs[5])  # halfway between 2 and 8
    assert minimum(lrs, losses) == pytest.approx(lrs[8] / 10)


def test_lr_find_restores_the_weights_and_suggests_a_usable_lr(planted):
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_df(planted, seed=0, bs=128)
    learn = Learner(dls, DotProductBias(300, 200, 8, (-1, 7)), progress=False)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    result = learn.lr_find(num_it=80, show_plot=True, suggest_funcs=("valley", "minimum"))
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert learn.opt is None and learn.recorder.values == []
    assert 1e-7 < result.valley < 10 and 1e-7 < result["minimum"] < 10
    # the suggestions sit where this model actually trains (the sweep itself spans 1e-7 to 10)
    assert 1e-4 < result.valley < 0.1 and result.valley < result["minimum"] < 0.1
    assert len(result.lrs) <= 80 and np.all(np.diff(result.lrs) > 0)
    learn.fit_one_cycle(3, result.valley)
    assert learn.recorder.values[-1][1] < learn.recorder.values[0][1] or learn.recorder.values[-1][1] < 0.2
    with pytest.raises(ValueError, match="unknown suggest_funcs"):
        learn.lr_find(suggest_funcs=("steepest",))


def test_lr_find_on_a_loader_with_no_batch_says_so(planted):
    """Fewer rows than one batch: a clear DataError (it used to cycle the empty loader forever)."""
    from collabkit import DataError

    dls = CollabDataLoaders.from_df(planted.sample(50, random_state=0), seed=0, bs=64)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 4, (-1, 7)), progress=False)
    with pytest.raises(DataError, match="fewer than one batch"):
        learn.lr_find(show_plot=False)


def test_divergence_stops_training_with_advice(planted):
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_df(planted, seed=0, bs=512)
    from collabkit import DotProduct, TrainingDivergedError

    learn = Learner(dls, DotProduct(300, 200, 8), progress=False)
    with pytest.raises(TrainingDivergedError, match="Try a lower learning rate"):
        learn.fit(1, 1e6)


def test_the_smoothed_loss_is_fastais_bias_corrected_average():
    from collabkit.training.recorder import Smoother, smooth

    np.testing.assert_allclose(smooth([1.0, 1.0, 1.0]), [1.0, 1.0, 1.0])  # a constant stays itself
    np.testing.assert_allclose(smooth([2.0, 0.0]), [2.0, 0.98 * 0.04 / (1 - 0.98**2)])  # by hand: 0.0392 / 0.0396
    running = Smoother()
    np.testing.assert_allclose([running(v) for v in [3.0, 1.0, 4.0, 1.0]], smooth([3.0, 1.0, 4.0, 1.0]))
