"""An interrupted run resumes where it stopped: same schedule, same weights as an uninterrupted one."""

import pytest
import torch

from collabkit import CollabDataLoaders, DotProductBias, Learner, ModelFileError
from collabkit.training import Callback
from collabkit.training.checkpoint import load_checkpoint


class StopAfter(Callback):
    """Simulates a crash (Ctrl-C) at the end of an epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_epoch(self, learn, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def fresh(planted, wd_mode="decoupled"):
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_df(planted, seed=3, bs=256)
    return Learner(dls, DotProductBias(300, 200, 8, (-1, 7)), progress=False, wd_mode=wd_mode)


def test_resume_continues_the_schedule_and_matches_an_uninterrupted_run(planted, tmp_path):
    whole = fresh(planted)
    whole.fit_one_cycle(4, 1e-2, wd=0.05)

    crashed = fresh(planted)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit_one_cycle(4, 1e-2, wd=0.05, checkpoint=tmp_path / "ck.pt", cbs=[StopAfter(1)])
    assert load_checkpoint(tmp_path / "ck.pt")["epochs_done"] == 2

    resumed = fresh(planted)  # a new process: fresh model, fresh optimizer
    resumed.resume(tmp_path / "ck.pt")
    assert resumed.recorder.lrs == pytest.approx(whole.recorder.lrs, rel=1e-12)
    assert len(resumed.recorder.values) == 4
    for a, b in zip(resumed.model.parameters(), whole.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert resumed.recorder.values[-1][1] == pytest.approx(whole.recorder.values[-1][1], rel=1e-4)
    assert load_checkpoint(tmp_path / "ck.pt")["epochs_done"] == 4


def test_a_bad_checkpoint_is_named(planted, tmp_path):
    learn = fresh(planted)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="bad.pt' is corrupt"):
        learn.resume(tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="no checkpoint at"):
        learn.resume(tmp_path / "missing.pt")
    learn.fit(1, 1e-2, checkpoint=tmp_path / "ck.pt")
    other = fresh(planted, wd_mode="l2")
    with pytest.raises(ValueError, match="wd_mode='decoupled'"):
        other.resume(tmp_path / "ck.pt")


@pytest.mark.parametrize("solver", ["bayes", "sparse"])
def test_recipe_fit_refuses_a_checkpoint_for_solvers_that_cannot_resume(planted, tmp_path, solver):
    from collabkit.training.recipe import TrainConfig, fit, prepare

    config = TrainConfig(solver=solver, n_factors=4, **({"sweeps": 3, "burn_in": 1} if solver == "bayes" else {"epochs": 1}))
    learn = prepare(config, planted.iloc[:500], planted.iloc[500:600])
    with pytest.raises(ValueError, match=f"checkpoints apply to the sgd solver; this config's solver is '{solver}'"):
        fit(learn, config, checkpoint=tmp_path / "ck.pt")
    assert not (tmp_path / "ck.pt").exists()
