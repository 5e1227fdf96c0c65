import numpy as np
import pandas as pd
import pytest
import torch

from collabkit import CollabDataLoaders, DataError, UnknownIdError, Vocabulary, validate_ratings
from collabkit.data import IndexBatches, RatingRangeWarning, check_y_range, random_split, read_ratings_file


def frame(**cols):
    base = {"user": [1, 1, 2, 2, 3], "item": ["a", "b", "a", "c", "b"], "rating": [4.0, 3.0, 5.0, 2.0, 1.0]}
    base.update(cols)
    return pd.DataFrame(base)


# --- validation -------------------------------------------------------------------
def test_columns_default_to_first_three_and_ratings_become_float32():
    out = validate_ratings(frame())
    assert list(out.columns) == ["user", "item", "rating"]
    assert out["rating"].dtype == np.float32


def test_missing_column_names_the_columns_present():
    with pytest.raises(DataError, match=r"item column 'movie' not found; the table has columns \['user', 'item', 'rating'\]"):
        validate_ratings(frame(), item_col="movie")


def test_nan_and_inf_ratings_give_count_and_first_rows():
    with pytest.raises(DataError, match=r"2 rating\(s\) are NaN or infinite.*row 1.*row 3"):
        validate_ratings(frame(rating=[4.0, np.nan, 5.0, np.inf, 1.0]))


def test_non_numeric_ratings_are_named():
    with pytest.raises(DataError, match=r"1 non-numeric rating\(s\).*row 2.*'five'"):
        validate_ratings(frame(rating=["4", "3", "five", "2", "1"]))


def test_duplicates_error_by_default_and_name_the_options():
    dup = frame(user=[1, 1, 2, 2, 1], item=["a", "b", "a", "c", "a"])
    with pytest.raises(DataError, match=r"1 \(user, item\) pair\(s\) appear more than once.*duplicates='mean'"):
        validate_ratings(dup)
    mean = validate_ratings(dup, duplicates="mean")
    assert len(mean) == 4
    assert mean.set_index(["user", "item"]).loc[(1, "a"), "rating"] == pytest.approx(2.5)
    last = validate_ratings(dup, duplicates="last")
    assert last.set_index(["user", "item"]).loc[(1, "a"), "rating"] == 1.0
    assert len(validate_ratings(dup, duplicates="keep")) == 5


def test_empty_table_and_too_few_users_or_items():
    with pytest.raises(DataError, match="empty"):
        validate_ratings(frame().iloc[:0])
    with pytest.raises(DataError, match="at least 2 distinct users"):
        validate_ratings(frame(user=[7] * 5, item=list("abcde")))
    with pytest.raises(DataError, match="at least 2 distinct items"):
        validate_ratings(frame(user=[1, 2, 3, 4, 5], item=["z"] * 5))


def test_missing_ids_are_an_error_and_float_ids_become_ints():
    with pytest.raises(DataError, match="missing user id"):
        validate_ratings(frame(user=[1, None, 2, 2, 3]))
    out = validate_ratings(frame(user=[1.0, 1.0, 2.0, 2.0, 3.0]))
    assert out["user"].dtype == np.int64


def test_ratings_outside_y_range_warn():
    with pytest.warns(RatingRangeWarning, match=r"1 rating\(s\) lie outside y_range"):
        check_y_range(np.array([1.0, 2.0, 6.0], dtype=np.float32), (0, 5.5))
    with pytest.raises(ValueError, match="low < high"):
        check_y_range(np.array([1.0]), (5, 1))


def test_read_ratings_file_csv_and_parquet(tmp_path):
    frame().to_csv(tmp_path / "r.csv", index=False)
    frame().to_parquet(tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(read_ratings_file(tmp_path / "r.csv"), frame())
    pd.testing.assert_frame_equal(read_ratings_file(tmp_path / "r.parquet"), frame())
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read Parquet"):
        read_ratings_file(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="does not exist"):
        read_ratings_file(tmp_path / "nope.csv")


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_a_file_in_another_separator_is_named_and_reads_with_sep(tmp_path, sep, name):
    path = tmp_path / "r.csv"
    frame().to_csv(path, index=False, sep=sep)
    with pytest.raises(DataError, match=f"may not be comma-separated.*looks {name}-separated, so pass --sep"):
        read_ratings_file(path)
    pd.testing.assert_frame_equal(read_ratings_file(path, sep=sep), frame())


def test_errors_name_the_files_line_with_plain_values(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,a,4\n\n2,b,\n3,c,abc\n4,d,2\n")  # line 3 is blank
    table = read_ratings_file(path)
    with pytest.raises(DataError, match=r"non-numeric rating\(s\) in column 'rating'; first: line 5: user=3, "
                                        r"item='c', rating='abc'$"):
        validate_ratings(table)
    path.write_text("user,item,rating\n1,a,4\n\n2,b,\n3,c,5\n")
    with pytest.raises(DataError, match=r"NaN or infinite in column 'rating'; first: line 4: user=2, item='b', "
                                        r"rating=\(empty\)$"):
        validate_ratings(read_ratings_file(path))
    with pytest.raises(DataError, match=r"first: row 1: user=1, item='b', rating=\(empty\)"):  # not from a file
        validate_ratings(frame(rating=[4.0, np.nan, 5.0, 2.0, 1.0]))


def test_a_rating_beyond_float32_is_refused_not_turned_into_infinity(tmp_path, recwarn):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,a,4\n2,b,7e99\n")
    with pytest.raises(DataError, match=r"beyond ±3.4e38.*line 3: user=2, item='b', rating=7e\+99"):
        validate_ratings(read_ratings_file(path))
    assert not [w for w in recwarn if "overflow" in str(w.message)]


# --- vocabulary -----------------------------------------------------------------------
def test_vocabulary_is_sorted_has_no_na_row_and_reports_unknowns():
    v = Vocabulary.from_values(["b", "a", "c", "a"], name="title")
    assert list(v) == ["a", "b", "c"] and len(v) == 3
    assert v.o2i == {"a": 0, "b": 1, "c": 2}
    assert v[torch.tensor(2)] == "c"
    assert v.index(["c", "zz", "a"]).tolist() == [2, -1, 0]
    with pytest.raises(UnknownIdError, match=r"unknown title id\(s\): 'zz'"):
        v.index_strict(["a", "zz"])


def test_vocabulary_ids_come_back_as_plain_python_values():
    v = Vocabulary.from_values(np.array([3, 1, 2], dtype=np.int64))
    assert v.to_list() == [1, 2, 3] and all(type(i) is int for i in v.to_list())


# --- splits and batches -------------------------------------------------------------------------
def test_random_split_is_fastais_recipe():
    train, valid = random_split(10, 0.2, seed=42)
    torch.manual_seed(42)
    expected = torch.randperm(10).numpy()
    assert valid.tolist() == expected[:2].tolist() and train.tolist() == expected[2:].tolist()
    with pytest.raises(ValueError, match="valid_pct"):
        random_split(10, 1.5)


def test_index_batches_shuffle_each_epoch_and_cover_every_row():
    x = torch.arange(20).reshape(10, 2)
    y = torch.arange(10, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    batches = IndexBatches(x, y, bs=3, shuffle=True, drop_last=True, generator=g)
    assert len(batches) == 3
    first = torch.cat([yb for _, yb in batches])
    second = torch.cat([yb for _, yb in batches])
    assert len(first) == 9 and not torch.equal(first, second)
    for xb, yb in batches:  # rows stay together
        assert torch.equal(xb[:, 0] // 2, yb.long())
    ordered = IndexBatches(x, y, bs=4)
    assert len(ordered) == 3 and torch.equal(torch.cat([yb for _, yb in ordered]), y)


def test_dataloaders_vocab_covers_both_splits_and_decodes(planted):
    dls = CollabDataLoaders.from_df(planted, seed=1, bs=32)
    assert len(dls.users) == planted["user"].nunique() and len(dls.items) == planted["item"].nunique()
    assert dls.train.n + dls.valid.n == len(planted)
    assert dls.valid.n == int(0.2 * len(planted))
    decoded = dls.decode(dls.train.x[:5], dls.train.y[:5])
    merged = decoded.merge(planted, on=["user", "item"], suffixes=("", "_src"))
    assert np.allclose(merged["rating"], merged["rating_src"]) and len(merged) == 5
    assert list(dls.show_batch(4).columns) == ["user", "item", "rating"]


@pytest.mark.parametrize("index", [["a", "b", "c", "d", "e"], pd.date_range("2026-01-01", periods=5)],
                         ids=["text", "dates"])
def test_errors_name_rows_by_position_whatever_the_index(index):
    table = frame(rating=[4.0, np.nan, 5.0, 2.0, 1.0]).set_axis(index)
    with pytest.raises(DataError, match=r"NaN or infinite.*first: row 1: user=1"):
        validate_ratings(table)
    table = frame(user=[1, None, 2, 2, 3]).set_axis(index)
    with pytest.raises(DataError, match=r"missing user id, e.g. at row\(s\) \[1\]"):
        validate_ratings(table)


def test_did_you_mean_looks_among_the_most_rated_titles_of_a_large_catalogue(monkeypatch):
    """difflib against every title took 0.2-0.6 s a query over 60,000 titles; the pool is the most-rated ones."""
    import collabkit.data.catalogue as catalogue_module
    from collabkit.data.catalogue import Catalogue
    from collabkit.data.history import RatingHistory

    monkeypatch.setattr(catalogue_module, "HINT_TITLES", 3)
    titles = ["Heat (1995)", "Casino (1995)", "Fargo (1996)", "Jaws (1975)", "Alien (1979)"]
    counts = np.array([50, 40, 30, 2, 1])  # Jaws and Alien are the least rated
    history = RatingHistory(np.array([0, 0]), np.zeros(0, dtype=np.int64), np.array([True]), counts, 3.0)
    catalogue = Catalogue(Vocabulary.from_values([0], name="user"), Vocabulary.from_values(list(range(5)), name="item"),
                          titles, history)
    assert catalogue.close_titles("Fargo (1995)", 1, 0.6) == ["Fargo (1996)"]
    assert "Jaws (1975)" not in catalogue.close_titles("Jaws (1976)", 3, 0.6)  # outside the pool of the 3 most-rated
    small = Catalogue(catalogue.users, catalogue.items, titles[:3], None)  # no history: every title
    assert small.close_titles("Heat (1996)", 1, 0.6) == ["Heat (1995)"]


def test_mistyped_title_checks_are_bounded_per_call(monkeypatch):
    """Every unknown text item ran difflib over the titles (about 20 ms each): 1,000 pairs could hold the
    server for seconds. Distinct texts are checked, at most HINT_CHECKS of them."""
    from collabkit.data.catalogue import HINT_CHECKS, Catalogue
    from collabkit.data.vocab import UNKNOWN

    titles = ["Heat (1995)", "Casino (1995)", "Fargo (1996)"]
    catalogue = Catalogue(Vocabulary.from_values(["u"], name="user"),
                          Vocabulary.from_values(["a", "b", "c"], name="item"), titles)
    calls = []
    real = catalogue.title_hint
    monkeypatch.setattr(catalogue, "title_hint", lambda text, cutoff: calls.append(text) or real(text, cutoff))
    items = ["zz"] * 50 + [f"id-{k}" for k in range(40)]
    catalogue.no_mistyped_titles(items, np.full(len(items), UNKNOWN))  # unknown text ids: the fallback, no error
    assert calls[0] == "zz" and calls.count("zz") == 1 and len(calls) == HINT_CHECKS
    with pytest.raises(UnknownIdError, match="did you mean 'Fargo"):
        catalogue.no_mistyped_titles(["Fargo (1995)"], np.array([UNKNOWN]))
