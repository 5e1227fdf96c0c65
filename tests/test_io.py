import json

import numpy as np
import pytest
import torch

from collabkit import (
    CollabDataLoaders,
    DotProduct,
    DotProductBias,
    EmbeddingNN,
    Learner,
    ModelFileError,
    Recommender,
    UnknownIdError,
    load_model,
    save_model,
)
from collabkit.io import CONFIG, HISTORY, INTERACTIONS, VOCAB, WEIGHTS


@pytest.fixture(scope="module")
def trained(planted):
    torch.manual_seed(0)
    frame = planted.assign(user=planted["user"].map(lambda u: f"u{u}"))  # string user ids
    dls = CollabDataLoaders.from_df(frame, seed=0, bs=512)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 8, (-1, 7)), progress=False)
    learn.fit_one_cycle(1, 1e-2)
    titles = {i: f"Item {i}" for i in frame["item"].unique()}
    return Recommender.from_learner(learn, titles=titles, info={"data": "planted"}), frame


@pytest.mark.parametrize(
    "model",
    [lambda: DotProduct(4, 3, 2, (0, 5)), lambda: DotProductBias(4, 3, 2), lambda: EmbeddingNN([(4, 3), (3, 2)], [5])],
    ids=["dot", "dot-bias", "nn"],
)
def test_every_model_round_trips_bit_for_bit(tmp_path, model):
    from collabkit import Vocabulary

    torch.manual_seed(0)
    m = model().eval()
    users, items = Vocabulary([10, 20, 30, 40], "user"), Vocabulary(["a", "b", "c"], "item")
    save_model(tmp_path / "m", m, users, items, {"user": "user", "item": "item", "rating": "rating"})
    loaded = load_model(tmp_path / "m")
    x = torch.tensor([[0, 0], [3, 2], [1, 1]])
    assert torch.equal(loaded.model(x), m(x))
    assert loaded.users == users and loaded.items == items


def test_round_trip_gives_identical_predictions_and_metadata(tmp_path, trained):
    rec, frame = trained
    rec.save(tmp_path / "model")
    # the training interactions come along (for the rating scale, evaluate's overlap check, a later ranker)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [CONFIG, HISTORY, INTERACTIONS, WEIGHTS, VOCAB]
    again = Recommender.load(tmp_path / "model")
    users, items = frame["user"].tolist()[:500], frame["item"].tolist()[:500]
    np.testing.assert_array_equal(again.predict(users, items)["prediction"], rec.predict(users, items)["prediction"])
    for name in ("indptr", "indices", "user_trained", "item_trained", "item_counts"):
        np.testing.assert_array_equal(getattr(again.history, name), getattr(rec.history, name))
    assert again.history.global_mean == pytest.approx(rec.history.global_mean)
    assert again.title(frame["item"].iloc[0]) == f"Item {frame['item'].iloc[0]}"
    assert again.info["data"] == "planted" and again.info["train_mse"] > 0 and again.columns == rec.columns
    assert isinstance(again.users[0], str) and isinstance(again.items[0], int)


def test_model_files_hold_no_pickle(tmp_path, trained):
    rec, _ = trained
    rec.save(tmp_path / "m")
    assert (tmp_path / "m" / WEIGHTS).read_bytes()[8:9] == b"{"  # safetensors: u64 length then a JSON header
    json.loads((tmp_path / "m" / CONFIG).read_text())
    json.loads((tmp_path / "m" / VOCAB).read_text())


def test_unknown_ids_are_named(trained):
    rec, _ = trained
    with pytest.raises(UnknownIdError, match="unknown user id.*'nobody'"):
        rec.predict(["nobody"], [0], strict=True)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / WEIGHTS).write_bytes(b"\x00" * 20), "model.safetensors' is corrupt"),
        (lambda d: (d / WEIGHTS).unlink(), "model.safetensors is missing"),
        (lambda d: (d / CONFIG).write_text("{not json"), "not valid JSON"),
        (lambda d: (d / VOCAB).unlink(), "vocab.json is missing"),
        (lambda d: (d / HISTORY).write_bytes(b"\x08" + b"\x00" * 7 + b"{}"), "history.safetensors' is corrupt"),
        (lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:-100]), "model.safetensors' is corrupt"),
        (lambda d: (d / CONFIG).write_text(json.dumps({"format": "other"})), "not a collabkit model config"),
        (
            lambda d: (d / VOCAB).write_text(json.dumps({**json.loads((d / VOCAB).read_text()), "users": ["x", "y"]})),
            "u_weight.weight has 300 rows but vocab.json lists 2 ids",
        ),
    ],
    ids=[
        "weights-garbage",
        "weights-missing",
        "config-garbage",
        "vocab-missing",
        "history-garbage",
        "weights-truncated",
        "foreign-format",
        "vocab-mismatch",
    ],
)
def test_corrupt_model_directories_are_refused_with_the_file_named(tmp_path, trained, damage, message):
    rec, _ = trained
    rec.save(tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path / "m")


def test_a_failed_save_leaves_the_previous_model_in_place(tmp_path, trained, monkeypatch):
    rec, frame = trained
    rec.save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("collabkit.io._write_json", disk_full)
    with pytest.raises(OSError, match="No space left"):
        rec.save(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging directory left behind
    monkeypatch.undo()
    Recommender.load(tmp_path / "m")


def test_save_refuses_to_replace_a_directory_that_is_not_a_model(tmp_path, trained):
    rec, _ = trained
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(ModelFileError, match="not a collabkit model directory; refusing"):
        rec.save(tmp_path / "notes")
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


def test_custom_models_cannot_be_saved_and_the_error_says_why(tmp_path):
    from collabkit import Vocabulary

    with pytest.raises(ModelFileError, match="only collabkit's built-in models"):
        save_model(tmp_path / "m", torch.nn.Linear(2, 1), Vocabulary([1, 2]), Vocabulary([1, 2]), {})


def test_an_untrained_learner_cannot_become_a_recommender(planted):
    from collabkit import NotFittedError

    dls = CollabDataLoaders.from_df(planted, seed=0, bs=512)
    learn = Learner(dls, DotProductBias(300, 200, 4), progress=False)
    with pytest.raises(NotFittedError, match="call fit or fit_one_cycle first"):
        Recommender.from_learner(learn)
