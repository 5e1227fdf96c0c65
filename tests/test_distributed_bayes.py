"""The Gibbs sampler (``--solver bayes``) on several processes: torch.distributed (gloo, CPU) through torchrun."""

import time

import numpy as np
import pytest
import torch
from launched import kill_worker, launched
from planted import planted_ratings

from collabkit import Recommender, distributed
from collabkit.cli import main
from collabkit.training.bayes import RowShare

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

# odd numbers of users and items, so that the two ranks' shares differ in size
GIBBS = ["--solver", "bayes", "--sweeps", "14", "--n-factors", "3", "--seed", "5", "--no-progress", "--show", "0",
         "--ranker", "none"]


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist_bayes") / "ratings.csv"
    planted_ratings(n_users=301, n_items=199).to_csv(path, index=False)
    return path


def test_two_processes_run_the_one_process_chain(ratings_csv, tmp_path):
    assert main(["train", "--data", str(ratings_csv), *GIBBS, "--out", str(tmp_path / "one")]) == 0
    assert main(["train", "--data", str(ratings_csv), *GIBBS, "--nproc", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = Recommender.load(tmp_path / "one"), Recommender.load(tmp_path / "two")
    # the same chain: every rank drew its share of the rows from the same random numbers
    for name, weight in one.model.state_dict().items():
        torch.testing.assert_close(two.model.state_dict()[name], weight, rtol=0, atol=1e-5)
    assert two.info["valid_rmse"] == pytest.approx(one.info["valid_rmse"], abs=1e-6)
    np.testing.assert_allclose(two.info["recorder"]["values"], one.info["recorder"]["values"], rtol=0, atol=1e-6)
    check = two.info["distributed"]
    assert check["world_size"] == 2
    # the reported RMSE comes from summed errors (float64 chain); the gathered predictions are the saved
    # float32 model's
    assert check["rmse_from_sums"] == pytest.approx(check["rmse_of_gathered_predictions"], rel=1e-6)
    assert check["weight_checksums"][0] == check["weight_checksums"][1]
    # an ordinary model directory: it loads, predicts and recommends
    users = list(one.users)[:3]
    top, top_one = two.recommend(users, n=5, rank_by="rating"), one.recommend(users, n=5, rank_by="rating")
    assert len(top) == 15 and list(top["item"]) == list(top_one["item"])
    assert np.isfinite(two.predict(users, list(top["item"])[:3])["prediction"]).all()


def test_a_rank_whose_share_is_empty_still_takes_part(tmp_path):
    """Three processes and two items: rank 0 draws no item, and the chain is still the one-process chain."""
    path = tmp_path / "tiny.csv"
    path.write_text("user,item,rating\n1,1,4\n2,1,3\n3,2,5\n4,1,2\n5,2,4\n1,2,3\n")
    argv = ["train", "--data", str(path), "--solver", "bayes", "--sweeps", "8", "--valid-pct", "0", "--no-progress",
            "--show", "0", "--ranker", "none"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--nproc", "3", "--out", str(tmp_path / "three")]) == 0
    one, three = Recommender.load(tmp_path / "one"), Recommender.load(tmp_path / "three")
    for name, weight in one.model.state_dict().items():
        torch.testing.assert_close(three.model.state_dict()[name], weight, rtol=0, atol=1e-5)


def test_each_rank_holds_only_the_ratings_of_its_rows(monkeypatch):
    """The shares of two ranks split the users and the items, and each side's ratings, between them."""
    frame = planted_ratings(n_users=31, n_items=19, density=0.3)
    users, items = frame["user"].to_numpy() - 1000, frame["item"].to_numpy()
    values = frame["rating"].to_numpy(np.float64)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    sides = []
    for r in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        share = RowShare.of_this_rank(31, 19)
        sides.append((share, *share.ratings(users, items, values)))
    (first, u0, i0), (second, u1, i1) = sides
    assert (first.users, second.users, first.items, second.items) == (slice(0, 15), slice(15, 31), slice(0, 9),
                                                                       slice(9, 19))
    dense = np.zeros((31, 19))
    dense[users, items] = values
    np.testing.assert_allclose(np.vstack([u0.ratings.to_dense(), u1.ratings.to_dense()]), dense)
    np.testing.assert_allclose(np.vstack([i0.ratings.to_dense(), i1.ratings.to_dense()]), dense.T)
    assert len(u0.values) + len(u1.values) == len(values) == len(i0.values) + len(i1.values)


@pytest.mark.parametrize("argv, message", [
    (["--solver", "bayes-svdpp"], "--nproc applies to the sgd, bayes and sparse solvers; bayes-svdpp runs in one "
                                  "process (drop --nproc)"),
    (["--solver", "bayes", "--checkpoint", "ck.pt"], "--checkpoint applies to the sgd and sparse solvers; bayes does "
                                                     "not save checkpoints (drop --checkpoint)"),
])
def test_what_does_not_apply_is_refused_in_one_line(ratings_csv, capsys, argv, message):
    assert main(["train", "--data", str(ratings_csv), *argv, "--nproc", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"collabkit: error: {message}") and err.count("\n") == 1


def test_a_killed_worker_ends_the_chain_with_a_one_line_error(ratings_csv, tmp_path):
    argv = ["train", "--data", str(ratings_csv), "--solver", "bayes", "--sweeps", "3000", "--n-factors", "2",
            "--no-progress", "--show", "0", "--nproc", "2"]
    with open(tmp_path / "err.txt", "w+") as err_file:
        with launched(argv, stderr=err_file) as launcher:
            assert launcher.stdout is not None
            for line in launcher.stdout:  # rank 0 says so just before the chain starts
                if line.startswith("Bayesian PMF by Gibbs sampling"):
                    break
            else:
                pytest.fail(f"the run ended before sampling: {err_file.read()}")
            time.sleep(1.0)  # well inside the chain (3000 sweeps take far longer)
            started = time.monotonic()
            kill_worker(launcher)
        err_file.seek(0)
        err = err_file.read()
    assert launcher.returncode == 1
    assert time.monotonic() - started < 60
    errors = [line for line in err.splitlines() if line.startswith("collabkit: error:")]
    assert len(errors) == 1 and "distributed training failed: rank" in errors[0]
