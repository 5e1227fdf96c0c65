"""Splits, metrics checked by hand, evaluate and cross-validation."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from planted import planted_clusters
from planted import train_recommender as train

from collabkit import Recommender
from collabkit.cli import main
from collabkit.data.splits import kfold, random_split, temporal_split, user_holdout
from collabkit.evaluate import cross_validate, evaluate, summarise
from collabkit.metrics import coverage, mae, ranking_metrics, rmse
from collabkit.training.recipe import TrainConfig

FAST = TrainConfig(epochs=2, bs=512, lr=2e-2, wd=0.01, n_factors=8, y_range=(0, 6), seed=0)


# --- splits -----------------------------------------------------------------------------------------
def test_random_split_and_kfold_partition_exactly():
    train_idx, valid_idx = random_split(103, 0.2, seed=1)
    assert sorted(np.concatenate([train_idx, valid_idx]).tolist()) == list(range(103)) and len(valid_idx) == 20
    folds = kfold(103, 5, seed=0)
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(103))  # every row tested exactly once
    for train_part, test_part in folds:
        assert not set(train_part) & set(test_part) and len(train_part) + len(test_part) == 103
    with pytest.raises(ValueError, match="k must be between 2"):
        kfold(10, 1)


def test_user_holdout_takes_each_users_latest_and_keeps_one():
    users = np.array([1, 1, 1, 2, 2, 3, 1])
    times = np.array([10, 30, 20, 5, 6, 1, 40])
    train_idx, test_idx = user_holdout(users, n=2, times=times)
    assert sorted(test_idx.tolist()) == [1, 4, 6]  # user 1: times 40, 30; user 2: time 6 (keeps one); user 3 keeps all
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(7))
    train_r, test_r = user_holdout(np.repeat([1, 2], 10), frac=0.3, seed=0)
    assert np.bincount(np.repeat([1, 2], 10)[test_r]).tolist() == [0, 3, 3]
    with pytest.raises(ValueError, match="exactly one of n"):
        user_holdout(users)


def test_temporal_split_respects_the_cut():
    times = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])
    train_idx, test_idx = temporal_split(times, valid_pct=0.3)
    assert sorted(times[test_idx].tolist()) == [8, 9, 10] and times[train_idx].max() < times[test_idx].min()
    assert temporal_split(times, cut=6)[1].tolist() == [2, 4, 6, 8, 9]


# --- metrics ------------------------------------------------------------------------------------------
def test_ranking_metrics_match_hand_computed_values():
    top = np.array([[1, 2, 3], [4, 5, 6], [7, 8, -1]])
    # user 0 finds 2 of {2, 9} at rank 2; user 1 misses {7}; user 2 has nothing relevant and is not scored
    m = ranking_metrics(top, relevant_users=np.array([0, 0, 1]), relevant_items=np.array([2, 9, 7]))
    ndcg_user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["precision"] == pytest.approx((1 / 3) / 2)
    assert m["recall"] == pytest.approx(0.5 / 2)
    assert m["ndcg"] == pytest.approx(ndcg_user0 / 2)
    assert m["map"] == pytest.approx(((1 / 2) / 2) / 2)  # precision@2 at the hit, over min(2 relevant, k=3)
    assert m["hit_rate"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx(0.5 / 2)
    assert m["users"] == 2
    assert coverage(top, n_items=16) == pytest.approx(8 / 16)
    perfect = ranking_metrics(np.array([[9, 2, 5]]), np.array([0, 0]), np.array([2, 9]), k=2)
    assert perfect["ndcg"] == pytest.approx(1.0) and perfect["precision"] == 1.0 and perfect["map"] == 1.0


def test_rating_metrics_by_hand():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)


# --- evaluate and cv ---------------------------------------------------------------------------------------
def test_evaluate_counts_cold_start_and_ranks_planted_favourites():
    frame, user_group, item_group = planted_clusters()
    frame = frame[["user", "item", "rating"]]
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(frame)) < 0.2
    train_part, test_part = frame[~test_mask], frame[test_mask]
    rec = train(train_part.assign(title="t"), valid_pct=0.01, epochs=8)
    cold = pd.DataFrame({"user": [5000, 0], "item": [0, 6000], "rating": [4.0, 2.0]})
    result = evaluate(rec, train_part, pd.concat([test_part, cold]), k=10, threshold=4.0)
    values = dict(zip(result["metric"], result["value"]))
    assert values["cold_users"] == 1 and values["cold_items"] == 1 and values["fallback_rows"] >= 2
    assert values["test_ratings"] == len(test_part) + 2
    assert values["rmse"] < 0.45
    # ~3 relevant test items per user among ~15 unrated favourites: recall is what can be high
    # (a random pick of 10 of the ~100 unrated items: recall ~0.1, hit rate ~0.26)
    assert values["recall@10"] > 0.45 and values["ndcg@10"] > 0.3 and values["hit_rate@10"] > 0.75
    assert "all trained items the user did not rate in training" in result.attrs["protocol"]


def test_cross_validation_reports_every_fold():
    frame, _, _ = planted_clusters(users_per_group=20, items_per_group=15)
    per_fold = cross_validate(FAST, frame[["user", "item", "rating"]], folds=3, seed=0)
    assert per_fold["fold"].tolist() == [0, 1, 2] and (per_fold["fit_seconds"] > 0).all()
    assert per_fold["test_ratings"].sum() == len(frame)
    summary = summarise(per_fold)
    row = summary.set_index("metric").loc["rmse"]
    assert row["mean"] == pytest.approx(per_fold["rmse"].mean()) and row["std"] == pytest.approx(per_fold["rmse"].std())


def test_cv_command_on_the_bundled_data(capsys):
    status = main(["cv", "--data", "ml-latest-small", "--folds", "2", "--epochs", "1", "--bs", "4096",
                   "--lr", "3e-2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert status == 0 and len(out["folds"]) == 2
    summary = {row["metric"]: row for row in out["summary"]}
    assert 0.7 < summary["rmse"]["mean"] < 1.2 and "precision@10" in summary


@pytest.mark.parametrize("policy, rows", [("mean", 5_000), ("keep", 6_000)])
def test_cv_applies_the_duplicates_policy(tmp_path, planted, capsys, policy, rows):
    """A table with 1,000 repeated pairs: --duplicates mean averages them away, keep trains on every row."""
    frame = planted.iloc[:5_000]
    path = tmp_path / "ratings.csv"
    pd.concat([frame, frame.iloc[:1_000]]).to_csv(path, index=False)
    status = main(["cv", "--data", str(path), "--folds", "2", "--epochs", "1", "--bs", "512", "--duplicates", policy,
                   "--json"])
    out = json.loads(capsys.readouterr().out)
    assert status == 0
    assert sum(fold["test_ratings"] for fold in out["folds"]) == rows


@pytest.mark.parametrize("split", ["temporal", "user-last", "user-random"])
def test_train_then_evaluate_on_the_same_split(tmp_path, capsys, split):
    frame, _, _ = planted_clusters(users_per_group=20, items_per_group=15)
    # seeded shuffled times: with np.arange the temporal split would hold out the last users whole and user-last the
    # last items, so most test rows would be cold; shuffled, every test user and item also has training ratings
    frame["timestamp"] = np.random.default_rng(0).permutation(len(frame))
    frame[["user", "item", "rating", "timestamp"]].to_csv(tmp_path / "r.csv", index=False)
    common = ["--data", str(tmp_path / "r.csv"), "--split", split, "--holdout", "3"]
    assert main(["train", *common, "--epochs", "2", "--bs", "256", "--lr", "3e-2", "--no-progress", "--show", "0",
                 "--out", str(tmp_path / "m")]) == 0
    trained = capsys.readouterr().out
    valid_rows = int(re.search(r"([\d,]+) valid ratings", trained).group(1).replace(",", ""))
    assert main(["evaluate", "--model", str(tmp_path / "m"), *common, "--json"]) == 0
    metrics = {row["metric"]: row["value"] for row in json.loads(capsys.readouterr().out)["metrics"]}
    assert metrics["test_ratings"] > 0 and "ndcg@10" in metrics
    assert metrics["test_ratings"] == valid_rows  # the split evaluate rebuilt is the one train validated on
    assert metrics["fallback_rows"] == 0 and metrics["cold_users"] == 0 and metrics["cold_items"] == 0
    # with no cold rows the model predicts exactly what training reported, for every split
    assert metrics["rmse"] == pytest.approx(Recommender.load(tmp_path / "m").info["valid_rmse"], rel=1e-4)
    if split == "user-last":
        assert metrics["test_ratings"] == 3 * frame["user"].nunique()


def test_evaluate_on_ml_100k_u1(ml100k_dir, tmp_path, capsys):
    common = ["--data", "ml-100k", "--data-dir", str(ml100k_dir), "--split", "u1"]
    assert main(["train", *common, "--epochs", "2", "--bs", "1024", "--lr", "1e-2", "--no-progress", "--show", "0",
                 "--out", str(tmp_path / "m")]) == 0
    assert "80,000 train / 20,000 valid" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(tmp_path / "m"), *common]) == 0
    out = capsys.readouterr().out
    assert "protocol:" in out and "precision@10" in out and "test_ratings" in out


def test_canonical_splits_need_ml_100k(capsys):
    assert main(["train", "--data", "ml-latest-small", "--split", "u1"]) == 1
    assert "use it with --data ml-100k" in capsys.readouterr().err


# --- the split, as a library object ---------------------------------------------------------------
def test_a_split_recorded_by_the_cli_replays_in_python(tmp_path, capsys):
    from collabkit.data import SplitSpec
    from collabkit.datasets import Dataset, split_dataset
    from collabkit.evaluate import evaluate

    frame, _, _ = planted_clusters(n_groups=3, users_per_group=20, items_per_group=12, seed=3)
    frame[["user", "item", "rating"]].to_csv(tmp_path / "r.csv", index=False)
    assert main(["train", "--data", str(tmp_path / "r.csv"), "--split", "user-random", "--holdout", "3", "--seed", "5",
                 "--show", "0", "--no-progress", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    rec = Recommender.load(tmp_path / "m")
    spec = SplitSpec.from_record(rec.info)
    assert spec == SplitSpec("user-random", 0.2, 3, 5) and SplitSpec.from_record(spec.record()) == spec

    dataset = Dataset("r.csv", frame[["user", "item", "rating"]], "user", "item", "rating", pd.Series(dtype=object))
    train_part, held = split_dataset(dataset, spec)
    assert held.groupby("user").size().eq(3).all()  # three per user, as recorded
    metrics = evaluate(rec, train_part, held)  # refused if any held-out pair had been trained on
    assert metrics.set_index("metric").loc["rmse", "value"] == pytest.approx(rec.info["valid_rmse"], rel=1e-4)
    with pytest.raises(Exception, match="pairs this model trained on"):
        evaluate(rec, *split_dataset(dataset, SplitSpec.from_record(rec.info, seed=6)))


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "u9"}, "split must be one of"),
    ({"valid_pct": 1.5}, "valid_pct must be between 0 and 1"),
    ({"holdout": 0}, "holdout must be a positive integer"),
    ({"seed": "7"}, "seed must be an integer"),
])
def test_a_bad_split_is_refused_when_named(fields, message):
    from collabkit.data import SplitSpec

    with pytest.raises(ValueError, match=message):
        SplitSpec(**fields)


def test_a_split_by_time_needs_timestamps():
    from collabkit.data import SplitSpec
    from collabkit.errors import DataError

    table = pd.DataFrame({"user": [1, 1, 2, 2], "item": [1, 2, 1, 2], "rating": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(DataError, match="needs a 'timestamp' column"):
        SplitSpec("temporal").indices(table)
    train_rows, test_rows = SplitSpec("temporal", valid_pct=0.5).indices(table.assign(timestamp=[4, 1, 3, 2]))
    assert sorted(test_rows) == [0, 2] and sorted(train_rows) == [1, 3]  # the latest half by time
