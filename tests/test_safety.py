"""Nothing lost, nothing silently wrong: model directories that are not ours, permissions, --out checked first,
mistyped titles, fold-in ratings off the model's scale."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest
from planted import planted_clusters, train_recommender

from collabkit import ModelFileError, UnknownIdError
from collabkit.cli import main
from collabkit.errors import DataError


@pytest.fixture(scope="module")
def rec():
    frame, _, _ = planted_clusters(n_groups=3, users_per_group=20, items_per_group=10, seed=1)
    return train_recommender(frame, epochs=4).fit_ranker("ease")


@pytest.mark.parametrize("files", [
    {"config.json": json.dumps({"architectures": ["BertModel"]})},
    {"config.json": json.dumps({"model_type": "bert"}), "model.safetensors": "not ours"},
    {"config.json": "{not json", "vocab.json": "{}"},
])
def test_save_refuses_a_folder_that_only_looks_like_a_model(tmp_path, rec, files):
    """A Hugging Face folder holds config.json and model.safetensors too: only "format": "collabkit-model" is ours."""
    folder = tmp_path / "hf-model"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(ModelFileError, match="not a collabkit model directory; refusing"):
        rec.save(folder)
    assert {p.name: p.read_text() for p in folder.iterdir()} == files


def test_a_replaced_model_keeps_its_permissions_and_a_new_one_follows_the_umask(tmp_path, rec):
    before = os.umask(0o022)
    try:
        rec.save(tmp_path / "new")
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755
        (tmp_path / "new").chmod(0o750)
        rec.save(tmp_path / "new")
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o750
    finally:
        os.umask(before)


def test_train_checks_out_before_it_trains(tmp_path, capsys):
    frame, _, _ = planted_clusters(n_groups=2, users_per_group=10, items_per_group=5)
    frame.to_csv(tmp_path / "r.csv", index=False)
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.tex").write_text("precious")
    status = main(["train", "--data", str(tmp_path / "r.csv"), "--out", str(tmp_path / "thesis"), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1 and "not a collabkit model directory" in captured.err
    assert "valid RMSE" not in captured.out  # refused before any training
    assert (tmp_path / "thesis" / "thesis.tex").read_text() == "precious"


def test_a_mistyped_title_is_an_error_with_suggestions(rec):
    with pytest.raises(UnknownIdError, match="did you mean 'Group 0 film 3'"):
        rec.predict([0], ["Group 0 flim 3"])
    assert rec.predict([0], [10**6])["fallback"].tolist() == ["item"]  # an unknown numeric id: the documented fallback


def test_fold_in_ratings_off_the_scale_are_refused(rec):
    for bad in (50.0, 1e6, -5.0):
        with pytest.raises(DataError, match="outside the training ratings"):
            rec.recommend_new_user({"Group 0 film 1": bad, "Group 0 film 2": 4.0})
        with pytest.raises(DataError, match="outside the training ratings"):
            rec.recommend_new_user({"Group 0 film 1": bad, "Group 0 film 2": 4.0}, rank_by="rating")


def test_a_fold_in_file_is_read_by_column_name(tmp_path, rec, capsys):
    rec.save(tmp_path / "m")
    pd.DataFrame({"rating": [5.0, 4.5, 5.0], "item": [0, 1, 2]}).to_csv(tmp_path / "me.csv", index=False)
    assert main(["recommend", "--model", str(tmp_path / "m"), "--ratings", str(tmp_path / "me.csv"), "--json",
                 "--rank-by", "rating"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    by_hand = rec.recommend_new_user({0: 5.0, 1: 4.5, 2: 5.0}, rank_by="rating")  # (item, rating), by name
    assert [r["item"] for r in from_file] == by_hand["item"].tolist()
    pd.DataFrame({"item": [0, 1, 2], "stars": [5.0, 4.5, 5.0]}).to_csv(tmp_path / "me.csv", index=False)
    assert main(["recommend", "--model", str(tmp_path / "m"), "--ratings", str(tmp_path / "me.csv"), "--json",
                 "--rank-by", "rating"]) == 0  # the item column by name, the ratings from the other column
    assert [r["item"] for r in json.loads(capsys.readouterr().out)] == by_hand["item"].tolist()


def test_evaluate_replays_the_training_split_and_refuses_an_overlapping_one(tmp_path, capsys):
    frame, _, _ = planted_clusters(n_groups=3, users_per_group=20, items_per_group=12, seed=2)
    frame[["user", "item", "rating"]].to_csv(tmp_path / "r.csv", index=False)
    data = ["--data", str(tmp_path / "r.csv")]
    assert main(["train", *data, "--seed", "7", "--valid-pct", "0.25", "--show", "0", "--no-progress",
                 "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "m"), *data, "--json"]) == 0
    captured = capsys.readouterr()
    assert "seed 7 (as recorded with the model)" in captured.err
    metrics = {m["metric"]: m["value"] for m in json.loads(captured.out)["metrics"]}
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["info"]
    assert metrics["rmse"] == pytest.approx(saved["valid_rmse"], rel=1e-4)  # the very split training validated on
    for other in (["--seed", "8"], ["--split", "user-random", "--holdout", "3"], ["--valid-pct", "0.5"]):
        assert main(["evaluate", "--model", str(tmp_path / "m"), *data, *other]) == 1
        err = capsys.readouterr().err
        assert "pairs this model trained on" in err and "Traceback" not in err, other
    assert main(["evaluate", "--model", str(tmp_path / "m"), *data, "--seed", "8", "--allow-overlap"]) == 0


def test_ids_keep_the_type_their_column_is_written_in(tmp_path):
    from collabkit.data import read_ratings_file

    (tmp_path / "r.csv").write_text("user,item,rating\n007,1,4\n7,2,3.5\n8,1,2\n")
    frame = read_ratings_file(tmp_path / "r.csv")
    assert frame["user"].tolist() == ["007", "7", "8"]  # a leading zero makes the column text: 007 is not 7
    assert frame["item"].tolist() == [1, 2, 1] and frame["rating"].tolist() == [4.0, 3.5, 2.0]


def test_a_headerless_file_is_refused_instead_of_losing_its_first_rating(tmp_path, capsys):
    (tmp_path / "r.csv").write_text("1,10,4\n2,10,3\n1,11,5\n2,11,2\n")
    assert main(["train", "--data", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert "looks like a rating, not a header" in err and "Traceback" not in err


def test_query_ids_in_other_digits_never_crash(rec):
    from collabkit.data.vocab import Vocabulary

    vocab = Vocabulary([1, 2, 3], name="user")
    assert vocab.parse(["2", "³", "١", "+3"]) == [2, "³", "١", 3]
    with pytest.raises(UnknownIdError, match="'³'"):
        rec.recommend(["³"])


@pytest.mark.parametrize("damage", [
    lambda text: json.dumps({**json.loads(text), "info": [1, 2]}),
    lambda text: json.dumps({**json.loads(text), "columns": "user,item"}),
    lambda text: text.rstrip()[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",
], ids=["info-a-list", "columns-a-string", "nested-100k-deep"])
def test_a_malformed_config_never_stops_the_watcher(tmp_path, rec, damage):
    pytest.importorskip("fastapi")
    import time

    from collabkit.serve import ModelHolder

    rec.save(tmp_path / "m")
    holder = ModelHolder(tmp_path / "m", watch_interval=0.02)
    holder.start_watching()
    try:
        config = tmp_path / "m" / "config.json"
        config.write_text(damage(config.read_text()))
        deadline = time.monotonic() + 10
        while holder.last_reload_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holder.last_reload_error is not None and holder._watcher.is_alive()
        with pytest.raises(ModelFileError):
            holder.reload()  # what POST /reload turns into a 409
        rec.save(tmp_path / "m")
        while holder.reloads == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holder.reloads == 1 and holder.last_reload_error is None
    finally:
        holder.stop_watching()


def test_predictions_stay_on_the_training_scale(tmp_path):
    """The default model (a dot product without y_range) is clipped to the training ratings' range."""
    frame, _, _ = planted_clusters(n_groups=3, users_per_group=20, items_per_group=12, seed=4)
    frame["rating"] = (frame["rating"] + 0.6).clip(1, 5).round()  # stars, many of them at the top of the scale
    frame[["user", "item", "rating"]].to_csv(tmp_path / "r.csv", index=False)
    assert main(["train", "--data", str(tmp_path / "r.csv"), "--show", "0", "--out", str(tmp_path / "m")]) == 0
    from collabkit import Recommender

    rec = Recommender.load(tmp_path / "m")
    low, high = float(frame["rating"].min()), float(frame["rating"].max())
    users, items = np.meshgrid(rec.users.ids, rec.items.ids)
    raw = rec.view.pair(rec.view.users[rec.users.index(users.ravel())], rec.view.items[rec.items.index(items.ravel())])
    assert raw.max() > high or raw.min() < low  # the raw dot product does leave the scale here
    preds = rec.predict(users.ravel(), items.ravel())["prediction"]
    assert preds.min() >= low - 1e-6 and preds.max() <= high + 1e-6
    top = rec.recommend(rec.users.ids[:5], n=5, rank_by="rating")
    assert top["score"].max() <= high + 1e-6 and len(top) == 25


@pytest.mark.parametrize("argv, message", [
    (["--solver", "bayes", "--epochs", "2", "--lr", "0.1"], "--epochs, --lr does not apply to the bayes solver"),
    (["--solver", "sparse", "--wd-mode", "l2"], "--wd-mode does not apply to the sparse solver"),
    (["--preset", "lesson", "--sweeps", "10"], "--sweeps does not apply to the sgd solver"),
])
def test_options_a_solver_would_ignore_are_refused(argv, message, capsys):
    assert main(["train", "--data", "ml-latest-small", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_sparse_solver_trains_with_its_own_settings(tmp_path):
    """--solver sparse took the default preset's 10 factors and AdamW's lr 5e-3 / wd 0.1 as Adagrad's."""
    frame, _, _ = planted_clusters(n_groups=2, users_per_group=15, items_per_group=10, seed=5)
    frame[["user", "item", "rating"]].to_csv(tmp_path / "r.csv", index=False)
    assert main(["train", "--data", str(tmp_path / "r.csv"), "--solver", "sparse", "--epochs", "2", "--show", "0",
                 "--ranker", "none", "--out", str(tmp_path / "m")]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())["info"]["config"]
    assert (config["solver"], config["n_factors"], config["lr"], config["wd"], config["epochs"]) == \
        ("sparse", 64, 0.05, 0.02, 2)


def test_vocabulary_index_of_one_id_is_its_row():
    from collabkit.data.vocab import UNKNOWN, Vocabulary

    vocab = Vocabulary(["Heat", "Up"], name="title")
    assert vocab.index("Heat") == 0 and vocab.index("Up") == 1  # not the rows of "H", "e", "a", "t"
    assert vocab.index(["Up", "Heat", "nope"]).tolist() == [1, 0, UNKNOWN]
    with pytest.raises(UnknownIdError, match="'nope'"):
        vocab.index("nope")


def test_verbose_errors_keep_their_traceback(capsys):
    assert main(["-v", "train", "--data", "nope.csv"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("collabkit: error: ")
    assert main(["train", "--data", "nope.csv"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_ids_past_2_to_the_63_stay_text(tmp_path):
    from collabkit.data import read_ratings_file

    (tmp_path / "r.csv").write_text("user,item,rating\n12345678901234567890,1,4\n2,2,3\n")
    assert read_ratings_file(tmp_path / "r.csv")["user"].tolist() == ["12345678901234567890", "2"]


def test_a_config_asking_for_more_than_its_weights_hold_is_refused_before_building(tmp_path, rec, monkeypatch):
    rec.save(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["model"]["config"]["n_users"] = 2_000_000
    path.write_text(json.dumps(config))
    import collabkit.models.dot as dot

    built = []
    monkeypatch.setattr(dot.DotProductBias, "__init__", lambda self, *a, **k: built.append(k) or 1 / 0)
    with pytest.raises(ModelFileError, match=r"does not match its config: config.json names sizes \[2000000\]"):
        from collabkit import Recommender

        Recommender.load(tmp_path / "m")
    assert not built  # refused from the safetensors header, before any table was allocated


def test_a_body_full_of_unknown_keys_gets_a_small_error(tmp_path, rec):
    pytest.importorskip("fastapi")
    import asyncio

    import httpx

    from collabkit.serve import create_app

    rec.save(tmp_path / "m")
    app = create_app(tmp_path / "m")
    # unknown keys spread over many objects are validated, and the answer lists the first 20 errors
    spread = {"pairs": [{"user": 0, "item": 1, **{f"k{j}": j for j in range(10)}} for _ in range(600)]}
    # one object with 60,000 keys is refused by one scan, before validation builds 60,000 errors
    wide = {"pairs": [{"user": 0, "item": 1}], **{f"k{i}": i for i in range(60_000)}}

    async def call(body) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.post("/predict", content=json.dumps(body), headers={"content-type": "application/json"})

    r = asyncio.run(call(spread))
    assert r.status_code == 422 and len(r.content) < 10_000
    assert r.json()["detail"][-1]["msg"] == "... and 5980 more errors"
    r = asyncio.run(call(wide))
    assert r.status_code == 422 and len(r.content) < 1_000
    (error,) = r.json()["detail"]
    assert error["type"] == "too_many_keys" and "60001 keys" in error["msg"]


def test_train_on_everything_then_evaluate_on_a_separate_file(tmp_path, capsys):
    frame, _, _ = planted_clusters(n_groups=3, users_per_group=20, items_per_group=12, seed=7)
    held = frame.groupby("user").sample(2, random_state=0)
    frame.drop(held.index)[["user", "item", "rating"]].to_csv(tmp_path / "train.csv", index=False)
    held[["user", "item", "rating"]].to_csv(tmp_path / "test.csv", index=False)
    assert main(["train", "--data", str(tmp_path / "train.csv"), "--valid-pct", "0", "--show", "0",
                 "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "no validation split: trained on every rating" in out and "valid RMSE" not in out
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--test", str(tmp_path / "test.csv"), "--json"]) == 0
    metrics = {m["metric"]: m for m in json.loads(capsys.readouterr().out)["metrics"]}
    assert metrics["test_ratings"]["value"] == len(held) and metrics["cold_users"]["value"] == 0
    assert metrics["rmse"]["value"] < 0.8 and metrics["ndcg@10"]["value"] > metrics["ndcg@10"]["popularity"]
    # the training file as "test" data is refused: every pair was trained on
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--test", str(tmp_path / "train.csv")]) == 1
    assert "keep the test file apart from training" in capsys.readouterr().err
    # replaying its split finds nothing held out, and says where to look instead
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "train.csv")]) == 1
    err = capsys.readouterr().err
    assert "trained with --valid-pct 0" in err and "--test FILE" in err


@pytest.mark.parametrize("column, message", [
    (lambda r, rng: rng.integers(880_000_000, 890_000_000, len(r)), "looks like a timestamp or an id"),
    (lambda r, rng: np.where(np.arange(len(r)) == 7, 500.0, r), "lie far outside the rest (e.g. 500"),
], ids=["timestamps", "a-typo"])
def test_a_rating_column_that_holds_no_ratings_is_refused(tmp_path, capsys, column, message):
    frame, _, _ = planted_clusters(n_groups=2, users_per_group=10, items_per_group=8, seed=9)
    frame["rating"] = column(frame["rating"].to_numpy(), np.random.default_rng(0))
    frame[["user", "item", "rating"]].to_csv(tmp_path / "r.csv", index=False)
    assert main(["train", "--data", str(tmp_path / "r.csv"), "--preset", "lesson", "--split", "user-random",
                 "--holdout", "1"]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_errors_name_the_option_not_the_python_argument(tmp_path, capsys):
    (tmp_path / "r.csv").write_text("user,item,rating\n1,1,4\n1,1,5\n2,2,3\n2,1,4\n")
    assert main(["train", "--data", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert "--duplicates mean" in err and "duplicates='mean'" not in err


def test_the_api_docs_page_works_offline(tmp_path, rec):
    pytest.importorskip("fastapi")
    import asyncio

    import httpx

    from collabkit.serve import create_app

    rec.save(tmp_path / "m")
    app = create_app(tmp_path / "m")

    async def calls() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            page = await c.get("/docs")
            return [page, await c.get("/docs/assets/swagger-ui-bundle.js"), await c.get("/docs/assets/swagger-ui.css")]

    page, js, css = asyncio.run(calls())
    assert page.status_code == 200 and "/openapi.json" in page.text
    assert "://" not in page.text  # nothing from another host (FastAPI's own page loads Swagger UI from a CDN)
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert js.status_code == 200 and len(js.content) > 100_000 and css.status_code == 200


def test_json_ids_come_out_as_the_data_stores_them(tmp_path, rec, capsys):
    rec.save(tmp_path / "m")
    assert main(["recommend", "--model", str(tmp_path / "m"), "--user", "3", "-n", "2", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [type(r["user"]) for r in records] == [int, int] and all(type(r["item"]) is int for r in records)


def _damaged_copy(tmp_path, rec, change) -> str:
    """``rec`` saved to a fresh folder, with ``change(folder)`` applied; the folder."""
    folder = tmp_path / "m"
    rec.save(folder)
    change(folder)
    return str(folder)


def _edit_config(edit):
    def change(folder):
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    return change


def _negative_counts(folder):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "history.safetensors"))
    tensors["item_counts"] = -np.abs(tensors["item_counts"]) - 1
    save_file(tensors, str(folder / "history.safetensors"))


@pytest.mark.parametrize(("change", "message"), [
    (_edit_config(lambda c: c["model"]["config"].update(y_range=[1])), "y_range must be (low, high)"),
    (_edit_config(lambda c: c["model"]["config"].update(y_range=[float("nan"), 5.5])), "finite low < high"),
    (_edit_config(lambda c: c["model"]["config"].update(n_factors=-8)), "n_factors must be a positive integer"),
    (_negative_counts, "history.safetensors' does not match"),
], ids=["y_range-of-one", "y_range-nan", "negative-width", "negative-counts"])
def test_a_damaged_model_file_is_one_line_at_load_not_a_wrong_answer_later(tmp_path, rec, capsys, change, message):
    from collabkit import Recommender

    folder = _damaged_copy(tmp_path, rec, change)
    with pytest.raises(ModelFileError) as caught:
        Recommender.load(folder)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert main(["recommend", "--model", folder, "--user", str(rec.users[0])]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_torch_error_while_building_keeps_to_its_first_line(tmp_path, rec, monkeypatch):
    import collabkit.models.dot as dot
    from collabkit import Recommender

    folder = _damaged_copy(tmp_path, rec, lambda folder: None)

    def torch_like_failure(self, *args, **kwargs):
        raise RuntimeError("Trying to create tensor with negative dimension -1\nException raised from check_size at "
                           "aten/src/ATen/native/Resize.h:42\nframe #0: c10::Error::Error(...)")

    monkeypatch.setattr(dot.DotProductBias, "__init__", torch_like_failure)
    with pytest.raises(ModelFileError, match="negative dimension -1$"):
        Recommender.load(folder)


def test_every_output_path_is_checked_before_the_work(tmp_path, rec, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("hi")
    rec.save(tmp_path / "m")
    cases = [
        (["train", "--preset", "lesson", "--epochs", "1", "--out", str(a_file / "sub")], "is a file, not a folder"),
        (["train", "--preset", "lesson", "--epochs", "1", "--checkpoint", str(tmp_path)], "is a directory"),
        (["predict", "--model", str(tmp_path / "m"), "--user", str(rec.users[0]), "--item", str(rec.items[0]),
          "--output", str(a_file / "x.csv")], "is a file, not a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err, argv
        assert "epoch" not in captured.out  # refused before any training
    assert a_file.read_text() == "hi"


def test_a_missing_id_is_named_by_its_line(tmp_path, rec, capsys):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,1,4\n\n,2,3\n2,2,3\n")
    assert main(["train", "--data", str(path)]) == 1
    assert "missing user id, e.g. at line(s) [4]" in capsys.readouterr().err
    rec.save(tmp_path / "m")
    pairs = tmp_path / "p.csv"
    pairs.write_text(f"user,item\n{rec.users[0]},{rec.items[0]}\n,{rec.items[1]}\n")
    assert main(["predict", "--model", str(tmp_path / "m"), "--pairs", str(pairs), "--json"]) == 1
    assert "line 3 has no user id" in capsys.readouterr().err  # it predicted 'null' with the average before


def test_predict_answers_with_ids_as_the_model_stores_them(tmp_path, rec, capsys):
    rec.save(tmp_path / "m")
    user, item = rec.users[0], rec.items[0]
    assert main(["predict", "--model", str(tmp_path / "m"), "--user", str(user), "--item", str(item), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["user"], row["item"]) == (user, item) and isinstance(row["user"], int)


@pytest.mark.parametrize("scale", [[3, 1], [5, "a"], [1], "x"])
def test_a_damaged_rating_scale_is_refused_at_load(tmp_path, rec, scale):
    from collabkit import Recommender

    folder = _damaged_copy(tmp_path, rec, _edit_config(lambda c: c["info"].update(rating_scale=scale)))
    with pytest.raises(ModelFileError, match="info.rating_scale must be"):
        Recommender.load(folder)


def test_auto_ranks_by_popularity_where_no_item_has_enough_users_for_ease(tmp_path, capsys):
    from collabkit import Recommender

    path = tmp_path / "tiny.csv"
    pd.DataFrame({"user": [1, 1, 2, 2, 3, 3], "item": [1, 2, 2, 3, 1, 3],
                  "rating": [4.0, 3.0, 5.0, 2.0, 4.0, 1.0]}).to_csv(path, index=False)
    assert main(["train", "--data", str(path), "--preset", "lesson", "--epochs", "1", "--bs", "2", "--out", str(tmp_path / "m"),
                 "--no-progress", "--show", "0"]) == 0  # it refused after training, and the model was lost
    assert Recommender.load(tmp_path / "m").ranker.name == "popular"


def test_a_bug_is_said_to_be_one_and_bad_settings_are_not(monkeypatch, capsys):
    """main took every ValueError for bad input: a bug printed as 'collabkit: error: ...', as if the user erred."""
    import collabkit.cli as cli

    assert main(["cv", "--data", "ml-latest-small", "--folds", "1"]) == 1  # a library ConfigError: the user's to fix
    err = capsys.readouterr().err
    assert err.startswith("collabkit: error: k must be between 2") and "Traceback" not in err

    def broken(args):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setitem(cli.COMMANDS, "datasets", broken)
    assert main(["datasets", "list"]) == 2
    err = capsys.readouterr().err
    assert "internal error (a bug" in err and "ValueError: operands" in err and "Traceback" not in err
    assert main(["-v", "datasets", "list"]) == 2
    assert "Traceback" in capsys.readouterr().err
