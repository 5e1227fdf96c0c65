"""Questions to a trained model, on planted preferences whose right answers are known."""

import numpy as np
import pandas as pd
import pytest
import torch
from planted import train_recommender

from collabkit import (
    CollabDataLoaders,
    DataError,
    DotProduct,
    DotProductBias,
    EmbeddingNN,
    Learner,
    Recommender,
    UnknownIdError,
)

train = train_recommender


@pytest.fixture(scope="module")
def rec(cluster_rec):
    return cluster_rec


def test_recommends_the_planted_favourites_never_a_seen_item(rec, clusters):
    frame, user_group, item_group = clusters
    users = list(range(0, 200, 7))
    top = rec.recommend(users, n=10)
    assert list(top.columns) == ["user", "rank", "item", "title", "score"]
    assert (top.groupby("user").size() == 10).all()
    rated = set(zip(frame["user"], frame["item"]))
    for user, picks in top.groupby("user"):
        unseen_favourites = [i for i in np.flatnonzero(item_group == user_group[user]) if (user, i) not in rated]
        own = (item_group[picks["item"].to_numpy()] == user_group[user]).sum()
        assert own == min(10, len(unseen_favourites)), user
    assert not any((u, i) in rated for u, i in zip(top["user"], top["item"]))
    assert (top.groupby("user")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_including_seen_items_returns_rated_ones(rec, clusters):
    frame, _, _ = clusters
    top = rec.recommend([3], n=25, exclude_seen=False)
    rated = set(frame.loc[frame["user"] == 3, "item"])
    assert rated & set(top["item"])


def test_batch_recommend_equals_one_by_one(rec):
    users = [5, 60, 111, 190, 42]
    batch = rec.recommend(users, n=7)
    single = pd.concat([rec.recommend([u], n=7) for u in users], ignore_index=True)
    pd.testing.assert_frame_equal(batch, single)


def test_candidates_can_be_restricted_by_id_or_title(rec):
    top = rec.recommend([0], n=5, items=[1, 2, 3, "Group 3 film 100"], exclude_seen=False)
    assert set(top["item"]) <= {1, 2, 3, 100} and len(top) == 4


def test_similar_items_finds_the_planted_clusters(rec, clusters):
    _, _, item_group = clusters
    for item in (0, 45, 70, 100):
        similar = rec.similar_items(item, n=10)
        assert item not in set(similar["item"])
        assert (item_group[similar["item"].to_numpy()] == item_group[item]).all()
        assert similar["similarity"].is_monotonic_decreasing and similar["similarity"].iloc[0] <= 1.0


def test_similar_items_by_title_and_a_title_miss_suggests(rec):
    by_title = rec.similar_items("Group 2 film 65", n=3)
    assert by_title.equals(rec.similar_items(65, n=3))
    with pytest.raises(UnknownIdError, match=r"unknown item id or title 'Group 2 flim 65'; did you mean 'Group 2 film 65'"):
        rec.similar_items("Group 2 flim 65")


def test_similar_users_share_the_group(rec, clusters):
    _, user_group, _ = clusters
    similar = rec.similar_users(10, n=10)
    assert (user_group[similar["user"].to_numpy()] == user_group[10]).all()


def test_predict_policies_for_unknown_ids(rec, clusters):
    frame, _, _ = clusters
    out = rec.predict([0, 0, 999, 999], [0, 555, 0, 555])
    assert out["fallback"].tolist() == ["", "item", "user", "user+item"]
    assert out["prediction"].iloc[3] == pytest.approx(float(frame["rating"].mean()), abs=0.02)
    # a new user's prediction follows the item: loved items of any group are near their mean
    item_means = frame.groupby("item")["rating"].mean()
    assert out["prediction"].iloc[2] == pytest.approx(item_means[0], abs=0.5)
    with pytest.raises(UnknownIdError, match=r"unknown user id\(s\): 999"):
        rec.predict([999], [0], strict=True)
    with pytest.raises(UnknownIdError, match=r"unknown item id or title 555"):
        rec.predict([0], [555], strict=True)


def test_ids_only_in_the_validation_split_are_called_out(clusters):
    frame, _, _ = clusters
    extra = pd.DataFrame({"user": [7777] * 3, "item": [0, 1, 2], "rating": [4.0, 4.0, 4.0], "title": "x"})
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_frames(frame[["user", "item", "rating"]], extra[["user", "item", "rating"]], bs=256)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 4, (0, 6)), progress=False)
    learn.fit(1, 1e-2)
    r = Recommender.from_learner(learn)
    with pytest.raises(UnknownIdError, match="7777 appear only in the validation split"):
        r.predict([7777], [0], strict=True)
    assert r.predict([7777], [0])["fallback"].tolist() == ["user"]
    with pytest.raises(UnknownIdError, match="only in the validation split"):
        r.recommend([7777])


def test_a_model_without_history_names_the_option_to_change(rec):
    """Seen items and rating counts need the history; each error names the option that does without it."""
    import copy

    bare = copy.copy(rec)
    bare.history = None
    with pytest.raises(DataError, match="seen items are unknown; pass exclude_seen=False"):
        bare.recommend([0], n=3)
    with pytest.raises(DataError, match="rating counts are unknown; pass min_ratings=0"):
        bare.recommend([0], n=3, exclude_seen=False, min_ratings=5)
    assert len(bare.recommend([0], n=3, exclude_seen=False)) == 3


def test_recommend_for_unknown_users_and_bad_n(rec):
    with pytest.raises(UnknownIdError, match="unknown user id"):
        rec.recommend([0, "stranger"])
    with pytest.raises(ValueError, match="n must be a positive integer"):
        rec.recommend([0], n=0)


def test_fold_in_recovers_a_planted_users_taste_from_ten_ratings(clusters):
    frame, user_group, item_group = clusters
    newcomer = 25  # group 0
    with_them = train(frame, seed=1, epochs=10)
    without = train(frame[frame["user"] != newcomer], seed=1, epochs=10)
    theirs = frame[frame["user"] == newcomer].sample(10, random_state=0)
    new = without.fold_in(dict(zip(theirs["item"], theirs["rating"])))
    top = without.recommend_new_user(new, n=10)
    assert (item_group[top["item"].to_numpy()] == user_group[newcomer]).all()
    assert not set(top["item"]) & set(theirs["item"])
    all_items = list(range(120))
    folded = without.predict_new_user(new, all_items)
    trained = with_them.predict([newcomer] * 120, all_items)["prediction"].to_numpy()
    assert np.sqrt(np.mean((folded - trained) ** 2)) < 0.35
    assert np.corrcoef(folded, trained)[0, 1] > 0.95
    # by title too, and the same as recommend_new_user given the ratings directly
    by_dict = without.recommend_new_user(dict(zip(theirs["title"], theirs["rating"])), n=10)
    assert by_dict["item"].tolist() == top["item"].tolist()


def test_fold_in_bad_input(rec):
    with pytest.raises(DataError, match="at least one"):
        rec.fold_in({})
    with pytest.raises(DataError, match="must be numbers"):
        rec.fold_in({0: "great"})
    with pytest.raises(UnknownIdError, match="unknown item"):
        rec.fold_in({"no such film": 5})


@pytest.mark.parametrize(
    "factory",
    [lambda u, i: DotProduct(u, i, 8, (0, 6)), lambda u, i: EmbeddingNN([(u, 8), (i, 8)], [16], y_range=(0, 6))],
    ids=["dot", "nn"],
)
def test_other_models_answer_the_same_questions(clusters, factory):
    frame, user_group, item_group = clusters
    r = train(frame, factory, epochs=8)
    top = r.recommend([0, 70, 130], n=5)
    assert (item_group[top["item"].to_numpy()] == user_group[top["user"].to_numpy()]).mean() >= 0.8
    assert len(r.similar_items(3, n=5)) == 5
    new = r.fold_in({0: 5.0, 1: 5.0, 2: 4.5, 40: 1.5, 70: 1.0})
    assert np.isfinite(r.predict_new_user(new, [3, 4])).all()
    assert len(r.recommend_new_user(new, n=5)) == 5


def test_a_loaded_model_answers_like_the_trained_one(rec, tmp_path):
    rec.save(tmp_path / "m")
    again = Recommender.load(tmp_path / "m")
    pd.testing.assert_frame_equal(again.recommend([1, 2, 3], n=5), rec.recommend([1, 2, 3], n=5))
    pd.testing.assert_frame_equal(again.similar_items(4), rec.similar_items(4))


def test_min_ratings_keeps_obscure_items_out(rec, clusters):
    frame, _, _ = clusters
    counts = frame.groupby("item").size()
    threshold = int(counts.median())
    top = rec.recommend([0, 1, 2], n=10, min_ratings=threshold)
    assert (counts.reindex(top["item"]).to_numpy() >= threshold).all()
    with pytest.raises(DataError, match="no candidate item has 100000 or more"):
        rec.recommend([0], min_ratings=100_000)


def test_a_title_made_of_digits_is_found_the_same_way_everywhere(clusters):
    """Integer item ids and a title "1917": every lookup (one item, strict predict, fold-in) finds the titled
    item, rather than the parsed number 1917 (no such id) falling through as unknown."""
    frame = clusters[0].copy()
    first = int(frame["item"].min())
    frame["title"] = frame["title"].where(frame["item"] != first, "1917")
    assert 1917 not in set(frame["item"])
    rec = train(frame, epochs=2)
    row = rec.item_row("1917")
    assert rec.items[row] == first
    assert rec.catalogue.trained_item_rows_of(["1917"]).tolist() == [row]
    by_title = rec.predict([3], ["1917"], strict=True)["prediction"].item()
    assert by_title == rec.predict([3], [first], strict=True)["prediction"].item()
    with pytest.raises(UnknownIdError, match="unknown item id or title '1918'"):
        rec.predict([3], ["1918"], strict=True)


def test_recommending_in_small_blocks_of_users_gives_the_same_lists(rec, monkeypatch):
    """Scores are computed a block of users at a time; blocks of 3 users (and seen items masked per block)
    must give exactly the lists of a single block."""
    import collabkit.recommend as module

    users = list(range(0, 200, 3))
    whole = rec.recommend(users, n=8)
    monkeypatch.setattr(module, "PAIRS_PER_CHUNK", 3 * len(rec.trained_item_rows))
    blocked = rec.recommend(users, n=8)
    pd.testing.assert_frame_equal(blocked, whole)
    monkeypatch.setattr(module, "PAIRS_PER_CHUNK", 1)  # one user per block
    pd.testing.assert_frame_equal(rec.recommend(users, n=8), whole)


def test_fold_in_leaves_the_model_untouched_and_runs_concurrently(clusters):
    """Fold-in differentiates the new vector only: the network's parameters keep requires_grad and get no
    .grad, so the server's threads may fold in at the same time and get what one at a time gives."""
    from concurrent.futures import ThreadPoolExecutor

    r = train(clusters[0], lambda u, i: EmbeddingNN([(u, 8), (i, 8)], [16], y_range=(0, 6)), epochs=2)
    r.model.zero_grad(set_to_none=True)  # what training left behind
    before = {name: p.detach().clone() for name, p in r.model.named_parameters()}
    people = [{0: 5.0, 1: 4.5, 40: 1.0}, {50: 5.0, 51: 4.0, 2: 1.5}, {30: 4.5, 31: 5.0}, {5: 3.0, 45: 4.0}]
    alone = [r.fold_in(p).vector for p in people]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: r.fold_in(p).vector, people * 3))
    for k, vector in enumerate(together):
        torch.testing.assert_close(vector, alone[k % len(people)])
    for name, p in r.model.named_parameters():
        assert p.requires_grad and p.grad is None, name
        assert torch.equal(p.detach(), before[name]), name
