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


def test_recipe_fit_refuses_a_checkpoint_for_solvers_that_cannot_resume(planted, tmp_path):
    from collabkit.training.recipe import TrainConfig, fit, prepare, resume

    config = TrainConfig(solver="bayes", n_factors=4, sweeps=3, burn_in=1)
    learn = prepare(config, planted.iloc[:500], planted.iloc[500:600])
    message = "checkpoints apply to the sgd and sparse solvers; this config's solver is 'bayes'"
    with pytest.raises(ValueError, match=message):
        fit(learn, config, checkpoint=tmp_path / "ck.pt")
    with pytest.raises(ValueError, match=message):
        resume(learn, config, tmp_path / "ck.pt")
    assert not (tmp_path / "ck.pt").exists()


def test_a_sparse_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(planted, tmp_path, caplog):
    """One process: the checkpoint of epoch 2 of 4 (torch's engine, global batches), resumed, ends with the weights
    of the run that never stopped; the epoch table is continued, not restarted."""
    import torch

    from collabkit.training.callbacks import Callback, CancelFitException
    from collabkit.training.recipe import TrainConfig, fit, prepare, resume

    class StopAfterTwo(Callback):
        def after_epoch(self, learn, epoch):
            if epoch == 1:
                raise CancelFitException

    config = TrainConfig(solver="sparse", n_factors=4, epochs=4, bs=128)
    whole = prepare(config, planted.iloc[:2000], planted.iloc[2000:2400])
    fit(whole, config, checkpoint=tmp_path / "whole.pt")
    assert "trains with torch's ops, not its compiled loop" in caplog.text  # the slower engine is said, not silent
    stopped = prepare(config, planted.iloc[:2000], planted.iloc[2000:2400], cbs=[StopAfterTwo()])
    fit(stopped, config, checkpoint=tmp_path / "ck.pt")
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epochs_done"] == 2
    resumed = prepare(config, planted.iloc[:2000], planted.iloc[2000:2400])
    resume(resumed, config, tmp_path / "ck.pt")
    assert len(resumed.recorder.values) == 4
    for a, b in zip(resumed.model.parameters(), whole.model.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ModelFileError, match="is a checkpoint of the sparse solver, not of --solver sgd"):
        fresh(planted).resume(tmp_path / "ck.pt")  # each solver reads only its own checkpoints
    other = TrainConfig(solver="sparse", n_factors=4, epochs=4, bs=256)
    with pytest.raises(ValueError, match="resume with the same settings"):
        resume(prepare(other, planted.iloc[:2000], planted.iloc[2000:2400]), other, tmp_path / "ck.pt")


@pytest.mark.parametrize("solver", [["--preset", "lesson"], ["--solver", "sparse"]])
def test_resuming_on_other_training_rows_is_refused(planted, tmp_path, capsys, solver):
    """Another --seed splits the same file differently: the tables have the same shape, but resuming would score
    on rows the model trained on and train on others, so it is one line instead."""
    from collabkit.cli import main

    path = tmp_path / "ratings.csv"
    planted.iloc[:3000].to_csv(path, index=False)
    run = ["train", "--data", str(path), *solver, "--epochs", "2", "--no-progress", "--show", "0",
           "--checkpoint", str(tmp_path / "ck.pt")]
    assert main([*run, "--seed", "1"]) == 0
    capsys.readouterr()
    assert main([*run, "--seed", "2", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "the checkpoint was trained on other rows" in err and "--seed" in err and err.count("\n") == 1
    assert main([*run, "--seed", "1", "--resume"]) == 0  # its own rows: it resumes
