"""The page at ``/`` in a real browser: headless Chromium, driven by Playwright's sync API, over a real
uvicorn server (in a thread of this process) answering from small models trained here.

Where Playwright or a Chromium binary is missing these tests skip, saying which; under ``CI=true`` they
fail instead, so that CI cannot go green without having run them (``.ci/run`` installs Chromium). The
browser is the system's (``chromium`` on the PATH, or ``$COLLABKIT_CHROMIUM``): Playwright's own browser
download is not needed.

Screenshots for the docs: ``COLLABKIT_SCREENSHOTS=docs/figures pytest tests/test_page.py -k screenshot``
trains ``make demo``'s model (the bundled ml-latest-small: real titles) and writes ``page.png`` and
``page.zh-TW.png`` there.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from page_models import implicit_model, rating_model
from planted import unused_port

pytestmark = pytest.mark.browser

CHROMIUM_ENV = "COLLABKIT_CHROMIUM"
SCREENSHOTS_ENV = "COLLABKIT_SCREENSHOTS"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_MS = 15_000


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so the browser tests fail rather than skip (.ci/run installs chromium)")
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get(CHROMIUM_ENV) or next(filter(None, map(shutil.which, BROWSERS)), None)
    if path is None:
        _missing(f"no Chromium found (looked for {', '.join(BROWSERS)} on the PATH and ${CHROMIUM_ENV}); "
                 "apt-get install chromium")
    return path


class ThreadServer:
    """uvicorn serving ``app`` on a free loopback port from a daemon thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"page-server-{self.port}", daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    pytest.importorskip("uvicorn")
    executable = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable)
        yield b
        b.close()


@pytest.fixture(scope="module")
def servers(browser, tmp_path_factory):
    from collabkit.serve import create_app

    root = tmp_path_factory.mktemp("page")
    rating_model(root / "rating")
    implicit_model(root / "implicit")
    with ThreadServer(create_app(root / "rating")) as rating, ThreadServer(create_app(root / "implicit")) as implicit:
        yield {"rating": rating, "implicit": implicit}


class Page:
    """A fresh browser context (own localStorage) on one server, recording console errors."""

    def __init__(self, browser, url: str, locale: str = "en-US") -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=locale)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.url = url

    def open(self) -> Page:
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-ready]")
        return self

    def add(self, query: str) -> str:
        """Search for ``query``, take the first suggestion with Enter; the title added."""
        page = self.page
        page.fill("#search", query)
        page.wait_for_function("q => document.querySelector('#suggestions').dataset.query === q", arg=query.strip())
        title = page.locator("#suggestions li").first.inner_text().split(" · ")[0]
        page.press("#search", "Enter")
        page.wait_for_function("t => [...document.querySelectorAll('#rated .film')].some(b => b.textContent === t)",
                               arg=title)
        return title

    def rate(self, title: str, index: int) -> None:
        """Choose the ``index``-th option (1: the top of the scale) for the film ``title``."""
        self.page.get_by_label(f"Your rating for {title}", exact=True).select_option(index=index)

    def titles(self, selector: str) -> list[str]:
        return self.page.locator(f"{selector} .film").all_inner_texts()

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def page(browser, servers):
    opened = Page(browser, servers["rating"].url).open()
    yield opened
    opened.close()


def _wait_for_recommendations(p: Page, before: list[str] | None = None) -> list[str]:
    p.page.wait_for_function(
        "before => { const t = [...document.querySelectorAll('#recs .film')].map(b => b.textContent);"
        " return document.querySelector('#recs').getAttribute('aria-busy') === 'false'"
        " && t.length === 10 && JSON.stringify(t) !== JSON.stringify(before); }", arg=before)
    return p.titles("#recs")


def test_the_page_loads_without_console_errors(page):
    assert page.page.title() == "collabkit: films for your taste"
    assert "DotProductBias + ease" in page.page.inner_text("#identity")
    card = page.page.inner_text("#card")
    assert "MovieLens license" in card and "0.5000 / 0.4000" in card and "ratings, 200 users, 120 films" in card
    assert page.page.locator("#record table tbody tr").count() == 3  # the three epochs of the training record
    assert page.page.inner_text("#errors") == ""
    assert page.errors == []


def _suggestions(page: Page, query: str) -> list[str]:
    page.page.fill("#search", query)
    page.page.wait_for_function("q => document.querySelector('#suggestions').dataset.query === q", arg=query)
    return [s.split(" · ")[0] for s in page.page.locator("#suggestions li").all_inner_texts()]


def test_searching_a_title_finds_it_whatever_its_case(page):
    assert _suggestions(page, "gRoUp 2 FiLm 75") == ["Group 2 film 75"]
    suggestions = _suggestions(page, "gRoUp 3 FiLm 11")  # Group 3 film 110 .. 119: the 8 most-rated
    assert len(suggestions) == 8 and all(re.fullmatch(r"Group 3 film 11\d", s) for s in suggestions)
    page.page.press("#search", "ArrowDown")
    chosen = suggestions[1]
    page.page.press("#search", "Enter")  # the keyboard picks the second suggestion
    assert page.titles("#rated") == [chosen]
    assert page.page.evaluate("document.activeElement.getAttribute('aria-label')") == f"Your rating for {chosen}"
    assert page.errors == []


def test_rating_five_films_recommends_ten_others_and_a_new_rating_changes_them(page):
    rated = [page.add(f"Group 0 film {k}") for k in (1, 2, 3, 4, 5)]
    assert len(set(rated)) == 5
    for title in rated:
        page.rate(title, 1)  # the top of the scale
    recs = _wait_for_recommendations(page)
    assert len(recs) == 10 and not set(recs) & set(rated)
    assert sum(t.startswith("Group 0 ") for t in recs) >= 8  # they loved group 0's films: more of the same
    assert "5 ratings" in page.page.inner_text("#recs-status")
    for title in rated[:2]:  # two of them they now hate: the list changes
        page.rate(title, 10)
    changed = _wait_for_recommendations(page, recs)
    assert changed != recs and not set(changed) & set(rated)
    page.page.wait_for_function("document.querySelectorAll('#map circle.rated').length === 5")  # on the map too
    assert page.errors == []


def test_clicking_a_film_shows_its_similar_films(page):
    title = page.add("Group 2 film 70")
    page.page.locator("#rated .film", has_text=title).click()
    page.page.wait_for_selector("#similar li")
    similar = page.titles("#similar")
    assert len(similar) == 10 and title not in similar
    assert f"Films like {title}" in page.page.inner_text("#similar-status")
    assert sum(t.startswith("Group 2 ") for t in similar) >= 8
    page.page.locator("#similar .film").first.press("Enter")  # keyboard: a film is a button
    page.page.wait_for_function("t => document.querySelector('#similar-status').textContent.includes(t)",
                                arg=similar[0])


def test_the_map_draws_the_films_and_names_its_axes(page):
    page.page.wait_for_selector("#map circle")
    assert page.page.locator("#map circle.top").count() == 120  # every trained film (fewer than the page's 300)
    assert page.page.locator("#map-unavailable").is_hidden()
    axes = page.page.inner_text("#axes")
    assert re.search(r"Horizontal axis \(PC1, \d+% of the variance\)", axes) and "Other end (top)" in axes
    page.add("Group 1 film 40")
    page.rate("Group 1 film 40", 1)
    _wait_for_recommendations(page)
    page.page.wait_for_selector("#map circle.rated")
    assert page.page.locator("#map circle.rec").count() >= 1
    page.page.locator("#map circle.rated").focus()  # reachable without a mouse
    assert "Group 1 film 40 (your film)" in page.page.inner_text("#map-hover")
    page.page.keyboard.press("Enter")
    page.page.wait_for_function("document.querySelector('#similar-status').textContent.includes('Group 1 film 40')")


def test_switching_language_changes_the_labels_and_is_remembered(page):
    page.page.select_option("#lang", "zh-TW")
    assert page.page.inner_text("#recs-heading") == "為你推薦"
    assert page.page.get_attribute("html", "lang") == "zh-TW"
    assert page.page.locator("label[for=search]").inner_text() == "依片名搜尋電影"
    assert "資料集授權" in page.page.inner_text("#card") and "橫軸" in page.page.inner_text("#axes")
    assert page.page.inner_text("#map-hover") == "地圖上有 120 部電影。"  # status lines are said again
    page.page.reload()
    page.page.wait_for_selector("body[data-ready]")
    assert page.page.inner_text("#map-heading") == "口味地圖"  # remembered in localStorage
    page.page.select_option("#lang", "en")
    assert page.page.inner_text("#map-heading") == "The taste map"


def test_a_server_error_shows_a_readable_message(browser, servers):
    p = Page(browser, servers["rating"].url)
    try:
        p.page.route("**/recommendations", lambda route: route.fulfill(
            status=500, content_type="application/json",
            body='{"detail": "internal error; the server log has the details"}'))
        p.open()
        title = p.add("Group 1 film 33")
        p.rate(title, 1)
        p.page.wait_for_selector("#errors p")
        message = p.page.inner_text("#errors")
        assert "500" in message and "internal error; the server log has the details" in message
        assert p.page.locator("#errors").get_attribute("role") == "alert"
        assert p.page.inner_text("#rated") and p.page.inner_text("#card")  # the rest of the page still stands
        p.page.locator("#errors button").click()
        assert p.page.inner_text("#errors") == ""
        p.page.route("**/model", lambda route: route.abort())  # the server gone: said, not blank
        p.page.reload()
        p.page.wait_for_selector("#errors p")
        assert "cannot be reached" in p.page.inner_text("#errors")
    finally:
        p.close()


def test_a_reloaded_model_shows_on_the_next_request_and_an_unchanged_one_is_not_fetched_again(browser, tmp_path):
    """Each refresh asks /health whether the model was reloaded; /model (the card, the whole training record)
    is fetched again only when it was."""
    import httpx

    from collabkit.serve import create_app

    rating_model(tmp_path / "model")
    with ThreadServer(create_app(tmp_path / "model", reload_token="secret")) as server:
        p = Page(browser, server.url)
        try:
            fetched: list[str] = []
            p.page.on("request", lambda r: fetched.append(r.url) if r.url.endswith("/model") else None)
            p.open()
            title = p.add("Group 1 film 33")
            p.rate(title, 1)
            _wait_for_recommendations(p)
            assert len(fetched) == 1  # the card at start; the refreshes asked /health
            before = p.page.inner_text("#identity")
            time.sleep(1.1)  # (loaded_at is to the second)
            httpx.post(f"{server.url}reload", headers={"Authorization": "Bearer secret"}).raise_for_status()
            p.rate(title, 2)  # a refresh: it finds the reload
            p.page.wait_for_function("b => document.querySelector('#identity').textContent !== b", arg=before)
            assert len(fetched) == 2 and p.errors == []
        finally:
            p.close()


def test_a_model_without_item_factors_offers_seen_and_liked_and_no_map(browser, servers):
    p = Page(browser, servers["implicit"].url).open()
    try:
        unavailable = p.page.locator("#map-unavailable")
        assert unavailable.is_visible() and "unavailable" in unavailable.inner_text()
        assert p.page.locator("#map-figure").is_hidden()
        title = p.add("Group 2 film 60")
        select = p.page.get_by_label(f"Your rating for {title}", exact=True)
        assert select.locator("option").all_inner_texts()[1:] == ["liked", "seen"]
        select.select_option("liked")
        recs = _wait_for_recommendations(p)
        assert title not in recs and sum(t.startswith("Group 2 ") for t in recs) >= 8
        assert p.errors == []
    finally:
        p.close()


def test_screenshot_for_the_docs(browser, tmp_path):
    """Only with $COLLABKIT_SCREENSHOTS set (a folder): the docs' screenshots, over `make demo`'s model."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        pytest.skip(f"set ${SCREENSHOTS_ENV} to a folder to write the docs' screenshots")
    from collabkit.cli import main
    from collabkit.serve import create_app

    # the model `make demo` trains: the default preset on the bundled ml-latest-small (about 15 s)
    assert main(["train", "--data", "ml-latest-small", "--out", str(tmp_path / "model"), "--no-progress"]) == 0
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadServer(create_app(tmp_path / "model")) as server:
        p = Page(browser, server.url).open()
        try:
            for query, index in (("Toy Story (1995)", 1), ("Matrix, The", 2), ("Spirited Away", 1),
                                 ("Fargo (1996)", 2), ("Titanic (1997)", 8)):
                p.rate(p.add(query), index)
            _wait_for_recommendations(p)
            p.page.locator("#recs .film").first.click()
            p.page.wait_for_selector("#similar li")
            p.page.wait_for_selector("#map circle.rec")
            p.page.screenshot(path=str(out / "page.png"), full_page=True)
            p.page.select_option("#lang", "zh-TW")
            p.page.screenshot(path=str(out / "page.zh-TW.png"), full_page=True)
            assert p.errors == []
        finally:
            p.close()
