import pandas as pd
import pytest

from collabkit import Recommender
from collabkit.cli import main


@pytest.fixture(scope="module")
def ratings_csv(planted, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    frame = planted.rename(columns={"user": "uid", "item": "iid", "rating": "stars"}).sample(6000, random_state=0)
    frame["stars"] = frame["stars"].clip(0.5, 5.0)
    frame["name"] = [f"Film {i}" for i in frame["iid"]]
    frame[["name", "uid", "iid", "stars"]].to_csv(path, index=False)
    return path


FAST = ["--epochs", "2", "--bs", "256", "--lr", "1e-2", "--no-progress"]


def test_train_from_a_csv_prints_table_metrics_samples_and_saves(ratings_csv, tmp_path, capsys):
    out_dir = tmp_path / "model"
    args = ["train", "--data", str(ratings_csv), "--user-col", "uid", "--item-col", "iid", "--rating-col", "stars"]
    status = main([*args, "--title-col", "name", "--show", "3", "--out", str(out_dir), *FAST])
    out = capsys.readouterr().out
    assert status == 0
    assert "epoch" in out and "train_loss" in out and "valid_loss" in out and "rmse" in out
    assert "valid RMSE" in out and "MAE" in out
    assert "Film " in out and "predicted" in out
    rec = Recommender.load(out_dir)
    assert rec.columns == {"user": "uid", "item": "iid", "rating": "stars"}
    assert rec.info["config"]["epochs"] == 2 and rec.info["valid_rmse"] < 1.0
    stars = pd.read_csv(ratings_csv)["stars"]
    assert rec.info["valid_rmse"] < stars.std()  # better than predicting the mean rating
    assert rec.title(rec.items[0]).startswith("Film ")


@pytest.mark.parametrize("model", ["dot", "nn"])
@pytest.mark.parametrize("wd_mode", ["l2", "l2-loss"])
def test_train_other_models_and_wd_modes(ratings_csv, capsys, tmp_path, model, wd_mode):
    args = ["train", "--data", str(ratings_csv), "--user-col", "uid", "--item-col", "iid", "--rating-col", "stars"]
    out_dir = tmp_path / "model"
    assert main([*args, "--model", model, "--wd-mode", wd_mode, "--layers", "16", "--out", str(out_dir), *FAST]) == 0
    assert "valid RMSE" in capsys.readouterr().out
    rec = Recommender.load(out_dir)
    assert type(rec.model).__name__ == {"dot": "DotProduct", "nn": "EmbeddingNN"}[model]
    assert rec.info["config"]["model"] == model and rec.info["config"]["wd_mode"] == wd_mode


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "nope.csv"], "neither a dataset name"),
        (["--item-col", "movie"], "item column 'movie' not found; the table has columns ['name', 'uid', 'iid', 'stars']"),
        (["--item-col", "movie", "--title-col", "name"],
         "item column 'movie' not found; the table has columns ['name', 'uid', 'iid', 'stars']"),
        (["--valid-pct", "1.5"], "--valid-pct must be between 0 and 1"),
        (["--y-range", "5", "1"], "y_range must be"),
        (["--device", "cuda:0"], "torch sees no GPU"),
        (["--data", "synthetic:12x"], "'12x' is not a size"),
        (["--solver", "sparse", "--nproc", "2"], "--nproc applies to the sgd and bayes solvers; sparse runs in one"),
    ],
)
def test_user_errors_are_one_line_without_traceback(ratings_csv, capsys, argv, message):
    data = ["--data", str(ratings_csv)] if "--data" not in argv else []
    cols = ["--user-col", "uid"] if "--item-col" in argv else ["--user-col", "uid", "--item-col", "iid"]
    status = main(["train", *data, *cols, "--rating-col", "stars", *argv, *FAST])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("collabkit: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_nan_ratings_are_reported_from_the_cli(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text("u,i,r\n1,1,4\n1,2,\n2,1,3\n2,2,5\n")
    assert main(["train", "--data", str(path), *FAST]) == 1
    assert "1 rating(s) are NaN or infinite in column 'r'" in capsys.readouterr().err


def test_ml_100k_offline_says_where_to_point(monkeypatch, capsys, tmp_path):
    import dataclasses

    from planted import unused_port

    from collabkit import datasets

    url = f"http://127.0.0.1:{unused_port()}/ml-100k.zip"  # the download is refused at once
    monkeypatch.setitem(datasets.REGISTRY, "ml-100k", dataclasses.replace(datasets.REGISTRY["ml-100k"], url=url))
    monkeypatch.setenv("COLLABKIT_HOME", str(tmp_path))
    monkeypatch.delenv("COLLABKIT_DATA_DIR", raising=False)
    assert main(["train", "--data", "ml-100k", *FAST]) == 1
    err = capsys.readouterr().err
    assert url in err and "collabkit datasets add ml-100k" in err and "--data-dir" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_flags_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "svd"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'svd'" in err


def test_a_negative_min_ratings_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--model", "m", "--user", "1", "--min-ratings", "-3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "must be 0 or more, got -3" in err


def test_help_reads_clearly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for flag in ("--data", "--data-dir", "--model", "--epochs", "--lr", "--wd", "--wd-mode", "--bs", "--n-factors",
                 "--y-range", "--valid-pct", "--seed", "--out", "--user-col", "--item-col", "--rating-col"):
        assert flag in out


def test_train_on_ml_100k_from_a_data_dir(ml100k_dir, tmp_path, capsys):
    status = main(["train", "--data", "ml-100k", "--data-dir", str(ml100k_dir), "--epochs", "1", "--bs", "1024",
                   "--lr", "1e-2", "--no-progress", "--out", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert status == 0 and "80,000 train / 20,000 valid ratings (random split), 943 users" in out
    assert Recommender.load(tmp_path / "m").title(50) == "Star Wars (1977)"


def test_ratings_outside_the_y_range_warn_in_one_line(ratings_csv, capsys):
    args = ["train", "--data", str(ratings_csv), "--user-col", "uid", "--item-col", "iid", "--rating-col", "stars"]
    assert main([*args, "--y-range", "1", "4", *FAST]) == 0
    warning_lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning_lines) == 1 and "lie outside y_range=(1.0, 4.0)" in warning_lines[0]


def test_train_on_synthetic_data_by_size(capsys):
    """``--data synthetic:SIZE`` generates the scaling benchmark's planted ratings (noise 0.5) and trains on them."""
    status = main(["train", "--data", "synthetic:60k", "--solver", "sparse", "--n-factors", "16", "--epochs", "10",
                   "--no-progress", "--show", "0"])
    out = capsys.readouterr().out
    assert status == 0
    assert "synthetic:60k: 48,000 train / 12,000 valid ratings" in out and "600 users, 120 items" in out
    rmse = float(out.split("valid RMSE")[1].split()[0])
    assert 0.5 < rmse < 0.63  # the planted noise is 0.5; one epoch leaves 0.65


def test_a_semicolon_file_is_named_and_trains_with_sep(ratings_csv, tmp_path, capsys):
    path = tmp_path / "semi.csv"
    pd.read_csv(ratings_csv).to_csv(path, sep=";", index=False)
    args = ["train", "--data", str(path), "--user-col", "uid", "--item-col", "iid", "--rating-col", "stars", *FAST]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "may not be comma-separated" in err and "--sep ';'" in err and "Traceback" not in err
    assert main([*args, "--sep", ";", "--ranker", "none"]) == 0
    assert "valid RMSE" in capsys.readouterr().out
