"""The commands that ask a saved model questions, end to end through main([...])."""

import json

import pandas as pd
import pytest
from planted import planted_clusters

from collabkit.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    frame, _, _ = planted_clusters()
    frame.to_csv(folder / "ratings.csv", index=False)
    args = ["train", "--data", str(folder / "ratings.csv"), "--title-col", "title", "--y-range", "0", "6"]
    assert main([*args, "--epochs", "8", "--lr", "3e-2", "--wd", "0.01", "--bs", "128", "--n-factors", "8",
                 "--valid-pct", "0.1", "--no-progress", "--show", "0", "--out", str(folder / "model")]) == 0
    return folder / "model"


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_predict_one_pair_by_id_or_title(model_dir, capsys):
    status, out, _ = run(capsys, "predict", "--model", str(model_dir), "--user", "3", "--item", "5")
    assert status == 0 and "prediction" in out
    _, by_title, _ = run(capsys, "predict", "--model", str(model_dir), "--user", "3", "--item", "Group 0 film 5",
                         "--json")
    (record,) = json.loads(by_title)
    assert record["prediction"] > 3.5 and record["fallback"] == ""
    _, by_id, _ = run(capsys, "predict", "--model", str(model_dir), "--user", "3", "--item", "5", "--json")
    assert json.loads(by_id)[0]["prediction"] == pytest.approx(record["prediction"])  # id 5 is that film


def test_predict_pairs_file_to_csv(model_dir, tmp_path, capsys):
    pd.DataFrame({"user": [0, 1, 99999], "item": [1, 2, 3]}).to_csv(tmp_path / "pairs.csv", index=False)
    status, out, _ = run(capsys, "predict", "--model", str(model_dir), "--pairs", str(tmp_path / "pairs.csv"),
                         "--output", str(tmp_path / "out.csv"))
    written = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert status == 0 and "wrote 3 predictions" in out
    assert written["fallback"].tolist() == ["", "", "user"]


def test_recommend_for_users_and_for_a_new_users_ratings(model_dir, tmp_path, capsys):
    status, out, _ = run(capsys, "recommend", "--model", str(model_dir), "--user", "0", "60", "-n", "3", "--json")
    records = json.loads(out)
    assert status == 0 and len(records) == 6
    assert all(r["title"].startswith("Group 0") for r in records if r["user"] == 0)
    assert all(r["title"].startswith("Group 1") for r in records if r["user"] == 60)
    pd.DataFrame({"item": ["Group 2 film 60", "Group 2 film 61", "Group 0 film 1", 100],
                  "rating": [5, 4.5, 1, 1.5]}).to_csv(tmp_path / "me.csv", index=False)
    status, out, _ = run(capsys, "recommend", "--model", str(model_dir), "--ratings", str(tmp_path / "me.csv"), "-n", "4",
                         "--rank-by", "rating")
    assert status == 0 and out.count("Group 2 film") == 4 and "Group 2 film 60 " not in out


def test_recommend_for_someone_new_from_a_list_of_items(model_dir, tmp_path, capsys):
    """The ranking model (the default) folds in a bare list of items: no ratings needed. (Everyone rates half
    of every group here, so only the ratings' sizes say who likes what: a few more items make it clear.)"""
    pd.DataFrame({"item": ["Group 2 film 60", "Group 2 film 61", 62, 63, 64, 65]}).to_csv(tmp_path / "seen.csv",
                                                                                          index=False)
    status, out, _ = run(capsys, "recommend", "--model", str(model_dir), "--ratings", str(tmp_path / "seen.csv"),
                         "-n", "5", "--json")
    records = json.loads(out)
    assert status == 0 and len(records) == 5
    assert all(r["title"].startswith("Group 2") for r in records)
    assert not {60, 61, 62, 63, 64, 65} & {r["item"] for r in records}
    status, _, err = run(capsys, "recommend", "--model", str(model_dir), "--ratings", str(tmp_path / "seen.csv"),
                         "--rank-by", "rating")
    assert status == 1 and "needs a rating for each item" in err and "Traceback" not in err


def test_similar_items_and_users(model_dir, capsys):
    status, out, _ = run(capsys, "similar", "--model", str(model_dir), "--item", "Group 3 film 95", "-n", "5")
    assert status == 0 and out.count("Group 3 film") == 5
    status, out, _ = run(capsys, "similar", "--model", str(model_dir), "--user", "10", "--json")
    assert status == 0 and len(json.loads(out)) == 10
    _, user_group, _ = planted_clusters()
    similar = [row["user"] for row in json.loads(out)]
    assert 10 not in similar and (user_group[similar] == user_group[10]).mean() >= 0.9  # user 10's planted group


def test_explain_prints_tables_and_writes_plots(model_dir, tmp_path, capsys):
    status, out, _ = run(capsys, "explain", "--model", str(model_dir), "--plots", str(tmp_path / "plots"), "-n", "3")
    assert status == 0 and "highest bias" in out and "component 1" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["item_pca.png", "losses.png", "schedule.png"]
    status, out, _ = run(capsys, "explain", "--model", str(model_dir), "--json")
    assert status == 0 and "lowest bias: rated low even by people whose taste they match" in json.loads(out)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["recommend", "--user", "424242"], "unknown user id(s): 424242"),
        (["recommend"], "give either --user ID [ID ...] or --ratings FILE (a new user's ratings): exactly one"),
        (["recommend", "--user", "1", "--ratings", "r.csv"], "give either --user ID [ID ...] or --ratings FILE"),
        (["similar", "--item", "Group 3 flim 95"], "did you mean 'Group 3 film 95'"),
        (["similar"], "give either --item ID_OR_TITLE or --user ID: exactly one of them"),
        (["predict", "--user", "1"], "give --user and --item, or --pairs FILE"),
        (["predict", "--user", "1", "--item", "777", "--strict"], "unknown item id or title '777'"),
        (["predict", "--user", "nobody", "--item", "7", "--strict"], "unknown user id(s): 'nobody'"),
    ],
)
def test_bad_questions_are_one_line(model_dir, capsys, argv, message):
    status, _, err = run(capsys, argv[0], "--model", str(model_dir), *argv[1:])
    assert status == 1 and err.startswith("collabkit: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "damage, message",
    [
        (None, "no model directory at"),
        (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500]), "is corrupt"),
        (lambda d: (d / "vocab.json").write_text('{"users": [1, 2], "items": [1, 2], "titles": null}'),
         "rows but vocab.json lists 2 ids"),
        (lambda d: (d / "config.json").write_text(
            (d / "config.json").read_text().replace('"n_factors": 8', '"n_factors": 9')), "does not match its config"),
    ],
    ids=["missing", "truncated-weights", "vocab-mismatch", "shape-mismatch"],
)
def test_broken_model_directories_name_the_file(model_dir, tmp_path, capsys, damage, message):
    import shutil

    broken = tmp_path / "broken"
    if damage is not None:
        shutil.copytree(model_dir, broken)
        damage(broken)
    status, _, err = run(capsys, "recommend", "--model", str(broken), "--user", "1")
    assert status == 1 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_serve_refuses_a_broken_model_in_one_line(tmp_path, capsys):
    status, _, err = run(capsys, "serve", "--model", str(tmp_path / "nothing"), "--port", "1")
    assert status == 1 and "no model directory at" in err and err.count("\n") == 1


def test_predict_pairs_without_output_writes_csv_to_stdout(model_dir, tmp_path, capsys):
    import io

    pd.DataFrame({"user": [0, 1], "item": [1, 2]}).to_csv(tmp_path / "pairs.csv", index=False)
    status, out, _ = run(capsys, "predict", "--model", str(model_dir), "--pairs", str(tmp_path / "pairs.csv"))
    frame = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert status == 0 and list(frame.columns) == ["user", "item", "prediction", "fallback"] and len(frame) == 2
