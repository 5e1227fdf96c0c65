"""Multi-process training on torch.distributed (gloo, CPU), launched through torchrun."""

import json
import time

import numpy as np
import pytest
from launched import kill_worker, launched, wait_for_file
from planted import planted_ratings

from collabkit import Recommender
from collabkit.cli import main

TRAIN = ["--epochs", "2", "--bs", "256", "--lr", "1e-2", "--wd", "0.01", "--y-range", "-1", "7", "--no-progress",
         "--show", "0", "--seed", "7"]


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "ratings.csv"
    planted_ratings().to_csv(path, index=False)
    return path


def test_two_processes_match_one(ratings_csv, tmp_path, capfd):
    assert main(["train", "--data", str(ratings_csv), *TRAIN, "--out", str(tmp_path / "one")]) == 0
    note = "training the lesson's model with SGD"  # (TRAIN's SGD options switch the preset, and train says so)
    assert capfd.readouterr().out.count(note) == 1
    assert main(["train", "--data", str(ratings_csv), *TRAIN, "--nproc", "2", "--out", str(tmp_path / "two")]) == 0
    assert capfd.readouterr().out.count(note) == 1  # once, not by the launcher and again by every worker
    one, two = Recommender.load(tmp_path / "one"), Recommender.load(tmp_path / "two")
    assert two.info["valid_rmse"] == pytest.approx(one.info["valid_rmse"], abs=2e-3)
    users, items = list(one.users)[:200], list(one.items)[:200]
    np.testing.assert_allclose(two.predict(users, items)["prediction"], one.predict(users, items)["prediction"],
                               atol=2e-3)
    check = two.info["distributed"]
    assert check["world_size"] == 2
    # metrics come from summed errors, and agree exactly with the RMSE of all predictions gathered
    assert check["rmse_from_sums"] == pytest.approx(check["rmse_of_gathered_predictions"], rel=1e-9)
    # every rank ended with the same weights
    assert check["weight_checksums"][0] == check["weight_checksums"][1]


def test_a_dead_worker_ends_the_run_with_an_error_and_it_resumes(ratings_csv, tmp_path):
    checkpoint = tmp_path / "ck.pt"
    argv = ["train", "--data", str(ratings_csv), "--epochs", "40", "--bs", "64", "--lr", "1e-2", "--y-range", "-1",
            "7", "--no-progress", "--show", "0", "--nproc", "2", "--checkpoint", str(checkpoint)]
    with launched(argv) as launcher:
        wait_for_file(launcher, checkpoint)
        err = kill_worker(launcher)
    assert launcher.returncode != 0
    assert "collabkit: error: distributed training failed" in err
    # the checkpoint of the last finished epoch is intact, and the run continues from it
    resumed = ["train", "--data", str(ratings_csv), "--epochs", "40", "--bs", "64", "--lr", "1e-2", "--y-range", "-1",
               "7", "--no-progress", "--show", "0", "--checkpoint", str(checkpoint), "--resume", "--out",
               str(tmp_path / "m")]
    from collabkit.training.checkpoint import load_checkpoint

    done = load_checkpoint(checkpoint)["epochs_done"]
    assert 1 <= done < 40
    assert main(resumed) == 0
    state = load_checkpoint(checkpoint)
    assert state["epochs_done"] == 40 and len(state["recorder"]["values"]) == 40
    info = json.loads((tmp_path / "m" / "config.json").read_text())["info"]
    assert len(info["recorder"]["values"]) == 40


def test_predictions_on_a_sharded_shuffled_loader_are_in_order_and_leave_its_shuffling_alone(planted):
    """get_preds on a training loader sharded for DDP: this rank's contiguous rows, in order, and the
    loader's generator untouched (drawing from it would change the next epoch's batches)."""
    import torch

    from collabkit import CollabDataLoaders, DotProductBias, Learner

    dls = CollabDataLoaders.from_df(planted.iloc[:1000], seed=0, bs=64)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 4), progress=False)
    dls.train.shard(1, 2)
    state = dls.train.generator.get_state()
    preds, targs = learn.get_preds(ds_idx=0)
    half = dls.train.n // 2
    assert torch.equal(targs, dls.train.y[half:])
    with torch.no_grad():
        assert torch.allclose(preds, learn.model(dls.train.x[half:]).reshape(-1))
    assert torch.equal(dls.train.generator.get_state(), state)


def test_multi_process_validation_takes_summed_metrics_by_identity_not_by_name(planted, monkeypatch):
    """collabkit's rmse comes from the summed errors; a user's own metric that happens to be called ``mae``
    is computed by the user's function on the gathered predictions. One process stands in for rank 0 of 2."""
    from collabkit import CollabDataLoaders, DotProductBias, Learner, distributed, rmse

    def mae(preds, targs):  # not collabkit's mae
        return 42.0

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda t: t)  # rank 0's share stands for the whole
    monkeypatch.setattr(distributed, "all_gather_cat", lambda t: t)
    dls = CollabDataLoaders.from_df(planted.iloc[:1000], seed=0, bs=64)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 4), metrics=[rmse, mae], progress=False)
    loss, own_rmse, own_mae = learn.validate()
    preds, targs = learn.get_preds(dl=learn.valid_share())
    assert own_mae == 42.0
    assert own_rmse == pytest.approx(float(((preds.double() - targs.double()) ** 2).mean().sqrt()), rel=1e-9)
    assert loss == pytest.approx(own_rmse**2, rel=1e-9)


def test_a_rank_that_fails_ends_the_run_at_once_not_at_the_collectives_timeout(ratings_csv, tmp_path):
    """Rank 0 alone fails (its checkpoint's folder became a file) while rank 1 goes on training: rank 0 must leave
    without waiting at the final barrier, so that rank 1's next collective fails at once, not after 120 s."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    checkpoint = folder / "ck.pt"
    argv = ["train", "--data", str(ratings_csv), "--epochs", "200", "--bs", "64", "--lr", "1e-2", "--y-range", "-1",
            "7", "--no-progress", "--show", "0", "--nproc", "2", "--checkpoint", str(checkpoint)]
    with launched(argv) as launcher:
        wait_for_file(launcher, checkpoint)
        checkpoint.unlink()
        folder.rmdir()
        folder.write_text("not a folder")
        failed_at = time.monotonic()
        _, err = launcher.communicate(timeout=100)
        waited = time.monotonic() - failed_at
    assert launcher.returncode != 0
    assert "collabkit: error: distributed training failed: rank 0 exited with code 1" in err
    assert "internal error" not in err  # rank 1, left without its peer, says nothing: the cause is rank 0's
    assert waited < 60  # the collectives' timeout is 120 s


def test_the_launcher_blames_the_rank_that_failed_not_one_that_lost_its_peer(monkeypatch):
    """Rank 1 fails; rank 0 then stops because its peer is gone (exit PEER_LOST). The message names rank 1."""
    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from collabkit import distributed

    failures = {0: ProcessFailure(0, 100, distributed.PEER_LOST, "<N/A>"), 1: ProcessFailure(1, 101, 1, "<N/A>")}

    def torchrun(args):
        raise ChildFailedError("collabkit", failures)

    monkeypatch.setattr(torch.distributed.run, "main", torchrun)
    with pytest.raises(distributed.DistributedError, match="rank 1 exited with code 1"):
        distributed.launch(["train"], 2)
    failures[1] = ProcessFailure(1, 101, distributed.PEER_LOST, "<N/A>")  # both lost contact: no rank to blame
    with pytest.raises(distributed.DistributedError, match="the ranks lost contact with each other"):
        distributed.launch(["train"], 2)
