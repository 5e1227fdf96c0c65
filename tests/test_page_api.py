"""The endpoints the page at ``/`` needs, in-process through FastAPI's TestClient: title search, the taste
map (checked against a PCA computed here with numpy), the model card's fields, and the page's own files."""

from __future__ import annotations

import numpy as np
import pytest
from page_models import implicit_model, rating_model

from collabkit.datasets import REGISTRY

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from collabkit.serve import MAP_EXTREMES, create_app  # noqa: E402

# (starlette asks for httpx2 under its TestClient; the client works the same with httpx, which the test extra pins)
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def TestClient(app):  # noqa: N802 - imported on first use, so that its import-time warning is filtered too
    from fastapi.testclient import TestClient

    return TestClient(app)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("page_api")
    return {"rating": (root / "rating", rating_model(root / "rating")),
            "implicit": (root / "implicit", implicit_model(root / "implicit"))}


@pytest.fixture(scope="module")
def client(saved):
    with TestClient(create_app(saved["rating"][0])) as c:
        yield c


@pytest.fixture(scope="module")
def rec(saved):
    return saved["rating"][1]


def test_search_ignores_case_and_puts_titles_that_start_with_the_query_first(client, rec):
    body = client.get("/items/search", params={"q": "gROUP 2 FILM 7", "n": 20}).json()
    expected = {t for t in rec.titles if t is not None and "group 2 film 7" in t.lower()}
    assert body["match"] == "contains" and {i["title"] for i in body["items"]} == expected
    counts = [i["ratings"] for i in body["items"]]
    assert counts == sorted(counts, reverse=True)  # most-rated first (every title starts with the query)
    for item in body["items"]:
        assert rec.title(item["item"]) == item["title"]
        assert item["ratings"] == int(rec.history.item_counts[rec.item_row(item["item"])])
    middle = client.get("/items/search", params={"q": "film 70"}).json()["items"]
    assert [i["title"] for i in middle] == ["Group 2 film 70"]
    first = client.get("/items/search", params={"q": "Group 1", "n": 3}).json()["items"]
    assert len(first) == 3 and all(i["title"].startswith("Group 1 ") for i in first)


def test_search_offers_the_closest_titles_when_none_contains_the_query(client):
    body = client.get("/items/search", params={"q": "Grup 3 flm 101"}).json()
    assert body["match"] == "close" and "Group 3 film 101" in [i["title"] for i in body["items"]]
    body = client.get("/items/search", params={"q": "zzzzzzzzzzzzzzzzzzzz"}).json()
    assert body == {"query": "zzzzzzzzzzzzzzzzzzzz", "match": "none", "items": []}


def _numpy_pca(factors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = factors.mean(0)
    _, s, vt = np.linalg.svd(factors - mean, full_matrices=False)
    return mean, vt[:2], (s**2)[:2] / (s**2).sum()


def test_the_map_is_the_pca_of_the_item_factors(client, rec):
    n = 50
    body = client.get("/map", params={"n": n, "item": ["Group 3 film 119", "7"]}).json()
    assert body["available"] is True and body["reason"] is None
    top = [p for p in body["points"] if p["top"]]
    counts = rec.history.item_counts
    assert len(top) == n and [p["ratings"] for p in top] == sorted(counts, reverse=True)[:n]  # the most-rated
    rows = np.array([rec.item_row(p["item"]) for p in top])
    factors = rec.model.i_weight.weight.detach().double().numpy()
    mean, components, explained = _numpy_pca(factors[rows])
    got = np.array([[p["x"], p["y"]] for p in top])
    want = (factors[rows] - mean) @ components.T
    signs = np.sign((got * want).sum(0))  # a component's sign is a convention
    np.testing.assert_allclose(got, want * signs, atol=1e-6)
    np.testing.assert_allclose([a["explained"] for a in body["axes"]], explained, rtol=1e-6)
    # asked-for items are placed on the same components, once, unless they are among the top ones already
    asked = {p["title"]: p for p in body["points"] if not p["top"]}
    shown_top = {p["item"] for p in top}
    for title, item in (("Group 3 film 119", 119), ("Group 0 film 7", 7)):
        if item in shown_top:
            assert title not in asked
            continue
        np.testing.assert_allclose([asked[title]["x"], asked[title]["y"]],
                                   (factors[rec.item_row(item)] - mean) @ components.T * signs, atol=1e-6)
    # each axis names the items at its two ends
    for axis, column in zip(body["axes"], (0, 1)):
        order = np.argsort(got[:, column])
        assert [i["item"] for i in axis["low"]] == [top[k]["item"] for k in order[:MAP_EXTREMES]]
        assert [i["item"] for i in axis["high"]] == [top[k]["item"] for k in order[::-1][:MAP_EXTREMES]]


def test_a_model_without_item_factors_says_the_map_is_unavailable(saved):
    with TestClient(create_app(saved["implicit"][0])) as c:
        body = c.get("/map").json()
        model = c.get("/model").json()
    assert body["available"] is False and body["points"] == [] and "no item factors" in body["reason"]
    assert model["predicts_ratings"] is False and model["rating_scale"] is None and model["dataset"] is None


def test_the_model_card_fields(client, rec):
    body = client.get("/model").json()
    entry = REGISTRY["ml-latest-small"]
    assert body["dataset"] == {"name": entry.name, "ratings": entry.ratings, "license": entry.license, "url": entry.url}
    assert body["training_ratings"] == int(rec.history.item_counts.sum())
    assert body["rating_scale"] == pytest.approx(list(rec.rating_scale))
    assert body["info"]["valid_rmse"] == 0.5 and body["info"]["valid_ranking"]["ndcg@10"] == 0.35


@pytest.mark.parametrize("path, params, where", [
    ("/items/search", {}, "q"),
    ("/items/search", {"q": ""}, "q"),
    ("/items/search", {"q": "x" * 301}, "q"),
    ("/items/search", {"q": "film", "n": 0}, "n"),
    ("/items/search", {"q": "film", "n": 101}, "n"),
    ("/items/search", {"q": "film", "n": "ten"}, "n"),
    ("/map", {"n": 1}, "n"),
    ("/map", {"n": 2001}, "n"),
    ("/map", {"item": ""}, "item"),
    ("/map", {"item": [str(k) for k in range(101)]}, "item"),
])
def test_bad_parameters_are_422_naming_them(client, path, params, where):
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert any(where in e["loc"] for e in r.json()["detail"]), r.text


def test_a_blank_query_is_422_and_an_unknown_map_item_is_404(client):
    r = client.get("/items/search", params={"q": "   "})
    assert r.status_code == 422 and "query" in r.json()["detail"]
    r = client.get("/map", params={"item": "Group 9 film 999"})
    assert r.status_code == 404 and "Group 9 film 999" in r.json()["detail"]


def test_the_page_and_its_files_are_served_and_the_schema_lists_its_endpoints(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="page/app.js"' in page.text and "http" not in page.text.split("<body>")[0]  # no CDN
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = client.get(f"/page/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"] and len(r.text) > 1000
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/items/search", "/map"} <= set(paths) and "/" not in paths


def test_the_map_keeps_to_n_points_without_a_rating_history(saved):
    """n was applied only when the model had its history: without it, every item came back."""
    import json
    import shutil

    folder = saved["rating"][0].parent / "no-history"
    shutil.copytree(saved["rating"][0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["history"] = None
    (folder / "config.json").write_text(json.dumps(config))
    with TestClient(create_app(folder)) as c:
        r = c.get("/map", params={"n": 7})
    assert r.status_code == 200 and len(r.json()["points"]) == 7
