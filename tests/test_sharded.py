"""The sparse solver on several processes: tables sharded row-wise on TorchRec (gloo, CPU), launched through torchrun."""

import builtins
import importlib.util
import json

import numpy as np
import pytest
from launched import kill_worker, launched, wait_for_file
from planted import planted_ratings

from collabkit import Recommender
from collabkit.cli import main
from collabkit.training.checkpoint import load_checkpoint

HAVE_TORCHREC = all(importlib.util.find_spec(name) is not None for name in ("torchrec", "fbgemm_gpu"))

needs_torchrec = pytest.mark.skipif(not HAVE_TORCHREC, reason="TorchRec is not installed (pip install "
                                    "'collabkit[distributed]'; `make test` installs it)")

TRAIN = ["--solver", "sparse", "--epochs", "3", "--bs", "256", "--lr", "0.05", "--wd", "0.02", "--n-factors", "6",
         "--no-progress", "--show", "0", "--seed", "7"]


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("sharded") / "ratings.csv"
    planted_ratings().to_csv(path, index=False)
    return path


@pytest.mark.distributed
@needs_torchrec
def test_two_processes_on_torchrec_take_the_local_solvers_steps(ratings_csv, tmp_path):
    """2 ranks on TorchRec against 1 process: the same global batches (torch's engine, chosen by --checkpoint) give
    the same fit to float rounding; the compiled engine (another order) the same fit within a tolerance. The
    6 factors are padded to 8 columns in fbgemm, so the accumulator scaling is exercised too."""
    two, same, local = tmp_path / "two", tmp_path / "same", tmp_path / "local"
    assert main(["train", "--data", str(ratings_csv), *TRAIN, "--nproc", "2", "--out", str(two)]) == 0
    assert main(["train", "--data", str(ratings_csv), *TRAIN, "--checkpoint", str(tmp_path / "ck.pt"),
                 "--out", str(same)]) == 0
    assert main(["train", "--data", str(ratings_csv), *TRAIN, "--out", str(local)]) == 0
    two_m, same_m, local_m = Recommender.load(two), Recommender.load(same), Recommender.load(local)
    np.testing.assert_allclose(two_m.info["recorder"]["values"], same_m.info["recorder"]["values"], rtol=1e-4)
    users, items = list(two_m.users)[:300], list(two_m.items)[:200] * 2
    np.testing.assert_allclose(two_m.predict(users, items[:300])["prediction"],
                               same_m.predict(users, items[:300])["prediction"], atol=1e-3)
    assert two_m.info["valid_rmse"] == pytest.approx(local_m.info["valid_rmse"], abs=0.02)
    assert two_m.info["valid_rmse"] < 0.6  # it learned: the planted data's ratings spread about 1
    check = two_m.info["distributed"]
    assert check["world_size"] == 2
    # the RMSE reduced from summed errors through the sharded tables is the RMSE of the gathered model's predictions
    assert check["rmse_from_sums"] == pytest.approx(check["rmse_of_gathered_predictions"], rel=1e-6)
    assert check["weight_checksums"][0] == check["weight_checksums"][1]
    top = two_m.recommend([users[0]], n=5, rank_by="rating")
    assert len(top) == 5 and top["score"].is_monotonic_decreasing


@pytest.mark.distributed
@needs_torchrec
def test_a_dead_worker_ends_the_run_in_one_line_and_one_process_resumes_it(ratings_csv, tmp_path):
    """Kill rank 1 after the first checkpoint: one error line. The checkpoint holds whole tables, so one process
    continues it and ends where an uninterrupted one-process run with the same global batch ends."""
    checkpoint = tmp_path / "ck.pt"
    run = [*TRAIN[:2], "--epochs", "8", *TRAIN[4:]]
    argv = ["train", "--data", str(ratings_csv), *run, "--nproc", "2", "--checkpoint", str(checkpoint)]
    with launched(argv) as launcher:
        wait_for_file(launcher, checkpoint)
        err = kill_worker(launcher)
    assert launcher.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("collabkit: error:")]
    assert len(lines) == 1 and "distributed training failed: rank" in lines[0]
    state = load_checkpoint(checkpoint)
    assert state["solver"] == "sparse" and 1 <= state["epochs_done"] < 8
    assert tuple(state["model"]["u_weight.weight"].shape)[1] == 6  # whole, unpadded tables
    assert main(["train", "--data", str(ratings_csv), *run, "--checkpoint", str(checkpoint), "--resume",
                 "--out", str(tmp_path / "resumed")]) == 0
    assert main(["train", "--data", str(ratings_csv), *run, "--checkpoint", str(tmp_path / "whole.pt"),
                 "--out", str(tmp_path / "whole")]) == 0
    resumed, whole = Recommender.load(tmp_path / "resumed"), Recommender.load(tmp_path / "whole")
    assert len(resumed.info["recorder"]["values"]) == 8
    np.testing.assert_allclose(resumed.info["recorder"]["values"], whole.info["recorder"]["values"], rtol=1e-4)
    users, items = list(whole.users)[:200], list(whole.items)[:200]
    np.testing.assert_allclose(resumed.predict(users, items)["prediction"], whole.predict(users, items)["prediction"],
                               atol=1e-3)


def test_without_torchrec_several_processes_say_how_to_install_it(ratings_csv, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_torchrec(name, *args, **kwargs):
        if name.split(".")[0] in ("torchrec", "fbgemm_gpu"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchrec)
    assert main(["train", "--data", str(ratings_csv), *TRAIN, "--nproc", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("collabkit: error: --solver sparse on several processes trains on TorchRec")
    assert "pip install 'collabkit[distributed]'" in err[0]


def test_a_sgd_checkpoint_is_not_resumed_by_the_sparse_solver(ratings_csv, tmp_path, capsys):
    checkpoint = tmp_path / "sgd.pt"
    assert main(["train", "--data", str(ratings_csv), "--preset", "lesson", "--epochs", "1", "--no-progress",
                 "--show", "0", "--checkpoint", str(checkpoint)]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(ratings_csv), *TRAIN, "--checkpoint", str(checkpoint), "--resume"]) == 1
    assert "not of --solver sparse" in capsys.readouterr().err
    info = json.dumps(load_checkpoint(checkpoint)["n_epoch"])
    assert info == "1"
