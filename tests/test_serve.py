"""`collabkit serve`: a real uvicorn process on a free loopback port, called with a real HTTP client.

Two servers run for the whole module (started together, to halve the wait):
``main`` (reload token set, no watching) answers every endpoint and error,
then, last in this file, takes reloads through ``POST /reload``; ``watched``
(no token, watching its directory every 0.2 s) shows the directory route and
the disabled endpoint. Schemathesis fuzzes the app in-process through ASGI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from planted import planted_clusters, unused_port

from collabkit.recommend import Recommender
from collabkit.training.recipe import TrainConfig, train

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOKEN = "test-reload-token"
STARTUP_SECONDS = 90
STALL_SECONDS = 2.0  # the "reloaded" server's request timeout


def _train(folder: Path, seed: int, n_groups: int = 4) -> Recommender:
    frame, _, _ = planted_clusters(n_groups=n_groups, seed=seed)
    learn = train(TrainConfig(epochs=2, bs=256, lr=3e-2, n_factors=8, y_range=(0, 6), seed=seed),
                  frame[["user", "item", "rating"]])
    titles = dict(zip(frame["item"], frame["title"]))
    rec = Recommender.from_learner(learn, titles=titles, info={"data": f"planted seed {seed}",
                                                                 "trained_at": "2026-01-01T00:00:00Z"})
    rec.save(folder)
    return Recommender.load(folder)


class Server:
    """A `collabkit.serve.run` subprocess; its stderr (the request log) goes to a file."""

    def __init__(self, model_dir: Path, log_path: Path, token: str | None, watch: float | None,
                 **options: float) -> None:
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k != "COLLABKIT_RELOAD_TOKEN"}
        if token is not None:
            env["COLLABKIT_RELOAD_TOKEN"] = token
        code = (f"from collabkit.serve import run; run({str(model_dir)!r}, port={self.port}, "
                f"watch_interval={watch!r}" + "".join(f", {k}={v!r}" for k, v in options.items()) + ")")
        self._log = open(log_path, "wb")  # noqa: SIM115 - the server writes to it until stop()
        self.process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=self._log, stderr=self._log)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not answer /health in {STARTUP_SECONDS} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    first = _train(root / "first", seed=0)
    second = _train(root / "second", seed=1, n_groups=3)  # other users and items: a reload is visible
    for name in ("main", "watched", "reloaded"):
        shutil.copytree(root / "first", root / name)
    return {"root": root, "first": first, "second": second}


@pytest.fixture(scope="module")
def servers(models):
    root = models["root"]
    started = {
        "main": Server(root / "main", root / "main.log", token=TOKEN, watch=None),
        "watched": Server(root / "watched", root / "watched.log", token=None, watch=0.2),
        "reloaded": Server(root / "reloaded", root / "reloaded.log", token=TOKEN, watch=None,
                           request_timeout=STALL_SECONDS),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def client(servers):
    with httpx.Client(base_url=servers["main"].url, timeout=30) as c:
        yield c


def wait_for(probe, condition, what: str, seconds: float = 20):
    """Call ``probe`` until ``condition`` holds of what it returns (then return that), for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if condition(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} in {seconds:g} s: {value}")
        time.sleep(0.1)


def _no_traceback(response: httpx.Response) -> None:
    text = response.text
    assert "Traceback" not in text and 'File "' not in text and ".py" not in text, text
    assert set(response.json()) == {"detail"}


# --- every endpoint ---------------------------------------------------------------------------
def test_health_and_model(client, models):
    assert client.get("/health").json()["status"] == "ok"
    body = client.get("/model").json()
    rec = models["first"]
    assert body["model_class"] == "DotProductBias" and body["model_hyperparameters"]["n_factors"] == 8
    assert body["users"] == len(rec.users) and body["items"] == len(rec.items)
    assert body["info"]["data"] == "planted seed 0" and body["info"]["trained_at"] == "2026-01-01T00:00:00Z"
    assert body["has_titles"] and body["has_history"] and body["reloads"] == 0


@pytest.mark.parametrize("n, exclude_seen", [(1, True), (5, True), (12, False)])
def test_recommendations_match_the_library(client, models, n, exclude_seen):
    rec = models["first"]
    for user in (0, 7, 60, 199):
        r = client.get(f"/users/{user}/recommendations", params={"n": n, "exclude_seen": str(exclude_seen).lower()})
        assert r.status_code == 200, r.text
        got = r.json()
        want = rec.recommend([user], n=n, exclude_seen=exclude_seen)
        assert got["user"] == user
        assert [x["item"] for x in got["recommendations"]] == want["item"].tolist()
        assert [x["title"] for x in got["recommendations"]] == want["title"].tolist()
        assert [x["rank"] for x in got["recommendations"]] == want["rank"].tolist()
        assert [x["score"] for x in got["recommendations"]] == pytest.approx(want["score"].tolist(), abs=1e-6)


def test_similar_items_by_id_and_by_url_encoded_title(client, models):
    rec = models["first"]
    want = rec.similar_items(5, n=4)
    by_id = client.get("/items/5/similar", params={"n": 4}).json()
    by_title = client.get("/items/" + urllib.parse.quote("Group 0 film 5") + "/similar?n=4").json()
    assert by_id == by_title
    assert by_id["item"] == 5 and by_id["title"] == "Group 0 film 5"
    assert [x["item"] for x in by_id["similar"]] == want["item"].tolist()
    assert [x["similarity"] for x in by_id["similar"]] == pytest.approx(want["similarity"].tolist(), abs=1e-6)


def test_predict_batch_with_fallbacks_and_titles(client, models):
    pairs = [{"user": 3, "item": 5}, {"user": "3", "item": "Group 0 film 5"}, {"user": 99999, "item": 5}]
    r = client.post("/predict", json={"pairs": pairs})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = models["first"].predict([3, 3, 99999], [5, "Group 0 film 5", 5])
    assert [p["prediction"] for p in got] == pytest.approx(want["prediction"].tolist(), abs=1e-6)
    assert [p["fallback"] for p in got] == ["", "", "user"]
    assert got[1]["user"] == 3  # text digits are parsed as the model's int ids


def test_new_user_recommendations_fold_in(client, models):
    ratings = {"Group 2 film 60": 5.0, "Group 2 film 61": 4.5, "Group 0 film 1": 1.0, 100: 1.5}
    body = {"ratings": [{"item": k, "rating": v} for k, v in ratings.items()], "n": 4}
    r = client.post("/recommendations", json=body)
    assert r.status_code == 200, r.text
    got = r.json()["recommendations"]
    want = models["first"].recommend_new_user(ratings, n=4)
    assert [x["item"] for x in got] == want["item"].tolist()
    assert all(x["title"].startswith("Group 2") and x["title"] != "Group 2 film 60" for x in got)


# --- every error ------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path, body, status, names", [
    ("GET", "/users/99999/recommendations", None, 404, "99999"),
    ("GET", "/users/abc/recommendations", None, 404, "abc"),
    ("GET", "/items/424242/similar", None, 404, "424242"),
    ("GET", "/items/Group%200%20film%20X/similar", None, 404, "Group 0 film X"),
    ("GET", "/items/..%2F..%2Fetc%2Fpasswd/similar", None, 404, "etc/passwd"),
    ("POST", "/predict", {"pairs": [{"user": 1, "item": 77777}], "strict": True}, 404, "77777"),
    ("POST", "/recommendations", {"ratings": [{"item": "No such film", "rating": 4}]}, 404, "No such film"),
    ("GET", "/users/1/recommendations?n=0", None, 422, "n"),
    ("GET", "/users/1/recommendations?n=101", None, 422, "n"),
    ("GET", "/users/1/recommendations?n=ten", None, 422, "n"),
    ("GET", "/items/5/similar?n=-1", None, 422, "n"),
    ("POST", "/predict", {"pairs": []}, 422, "pairs"),
    ("POST", "/predict", {"pairs": [{"user": 1}]}, 422, "item"),
    ("POST", "/predict", {"pairs": [{"user": 1, "item": 2}] * 1001}, 422, "pairs"),
    ("POST", "/predict", {"pairs": [{"user": 1.5, "item": 2}]}, 422, "user"),
    ("POST", "/predict", {"pairs": [{"user": 1, "item": 2}], "path": "/etc/passwd"}, 422, "path"),
    ("POST", "/recommendations", {"ratings": [{"item": 1, "rating": "lots"}]}, 422, "rating"),
    ("POST", "/recommendations", {"ratings": [{"item": 1, "rating": 4}], "n": 0}, 422, "n"),
])
def test_errors_name_the_problem_without_a_traceback(client, method, path, body, status, names):
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    _no_traceback(r)
    assert names in json.dumps(r.json()["detail"])


def test_malformed_json_is_422_and_oversized_body_is_413(client):
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.text.lower() and "Traceback" not in r.text
    big = b'{"pairs": [' + b'{"user": 1, "item": 2},' * 60_000 + b'{"user": 1, "item": 2}]}'
    r = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    _no_traceback(r)

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"pairs": ['
        for _ in range(60_000):
            yield b'{"user": 1, "item": 2},'
        yield b'{"user": 1, "item": 2}]}'

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_docs(client):
    r = client.get("/nope")
    assert r.status_code == 404 and "Traceback" not in r.text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/health", "/model", "/users/{user_id}/recommendations", "/items/{item_id}/similar", "/predict",
            "/recommendations", "/reload"} <= set(schema["paths"])
    n = next(p for p in schema["paths"]["/users/{user_id}/recommendations"]["get"]["parameters"] if p["name"] == "n")
    assert n["schema"]["minimum"] == 1 and n["schema"]["maximum"] == 100


def test_request_log_is_one_json_line_per_request(client, servers):
    client.get("/users/0/recommendations", params={"n": 2})
    client.get("/users/99999/recommendations")
    log_path = servers["main"].log_path

    def logged() -> list[dict]:  # the server writes a request's line after sending its response: poll for both
        text = log_path.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line still being written is read on the next poll
        lines = [json.loads(line) for line in complete.splitlines() if line.startswith("{")]
        return [x for x in lines if x.get("path") in ("/users/0/recommendations", "/users/99999/recommendations")]

    mine = wait_for(logged, lambda found: {(x["method"], x["status"]) for x in found} >= {("GET", 200), ("GET", 404)},
                    "the request log did not show both requests")
    assert {(x["method"], x["status"]) for x in mine} >= {("GET", 200), ("GET", 404)}
    assert all(isinstance(x["latency_ms"], float) and x["latency_ms"] >= 0 for x in mine)


def test_an_internal_error_is_500_without_a_traceback(models):
    import asyncio

    from collabkit.serve import create_app

    app = create_app(models["root"] / "first")

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals /etc/passwd")

    app.state.holder.current.rec.similar_items = broken

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.get("/items/5/similar")

    r = asyncio.run(call())
    assert r.status_code == 500 and "secret" not in r.text and "Traceback" not in r.text


# --- fuzzing ----------------------------------------------------------------------------------
def test_schemathesis_finds_no_server_error(models):
    import hypothesis
    import schemathesis

    from collabkit.serve import create_app

    app = create_app(models["root"] / "first", reload_token=TOKEN)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, calls = [], []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @hypothesis.settings(max_examples=25, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        @hypothesis.given(case=op.as_strategy())
        def fuzz(case):
            response = case.call()
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:200]))
            assert "Traceback" not in response.text

        fuzz()
    assert not failures, failures
    assert len(calls) >= 100 and {200, 404, 422} <= set(calls), sorted(set(calls))


# --- stalled clients --------------------------------------------------------------------------
@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n",
                                  b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"],
                         ids=["nothing", "half-a-header", "short-body"])
def test_a_stalled_request_gets_408_and_its_connection_closes(servers, sent):
    import socket

    server = servers["reloaded"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=STALL_SECONDS + 20) as s:
        s.sendall(sent)
        started = time.monotonic()
        answer = b""
        while chunk := s.recv(4096):  # b"" once the server closes the connection
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and b"in time" in answer, answer
    assert STALL_SECONDS * 0.9 <= waited < STALL_SECONDS + 15, waited
    # a whole request on a fresh connection is unaffected, and a keep-alive client may pause between requests
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/health").status_code == 200
        time.sleep(STALL_SECONDS * 1.2)
        assert c.get("/health").status_code == 200


def test_a_stalled_second_request_on_a_kept_alive_connection_also_gets_408(servers):
    import socket

    server = servers["reloaded"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=STALL_SECONDS + 20) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or len(first.split(b"\r\n\r\n", 1)[1]) < 2:  # headers and a short body
            first += s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\nHo")  # the next request stalls half-way through its header
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer  # it was closed without a word


# --- reload (each on a server of its own, so that the order of tests does not matter) -------------
def test_reload_needs_the_token(client):
    assert client.post("/reload").status_code == 401
    r = client.post("/reload", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and "wrong" in r.json()["detail"]


def test_reload_refuses_a_corrupt_model_and_takes_a_good_one(servers, models):
    with httpx.Client(base_url=servers["reloaded"].url, timeout=30) as client:
        root = models["root"]
        before = client.get("/users/0/recommendations").json()
        (root / "reloaded" / "model.safetensors").write_bytes(b"not a safetensors file")
        r = client.post("/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409 and "still serving" in r.json()["detail"] and "corrupt" in r.json()["detail"]
        _no_traceback(r)
        assert client.get("/users/0/recommendations").json() == before
        assert "corrupt" in client.get("/model").json()["last_reload_error"]

        models["second"].save(root / "reloaded")
        r = client.post("/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["users"] == len(models["second"].users)
        model = client.get("/model").json()
        assert model["info"]["data"] == "planted seed 1" and model["reloads"] == 1 and model["last_reload_error"] is None
        got = client.get("/users/0/recommendations", params={"n": 5}).json()["recommendations"]
        assert [x["item"] for x in got] == models["second"].recommend([0], n=5)["item"].tolist()
        assert client.get("/users/199/recommendations").status_code == 404  # 150 users now


def test_watching_refuses_a_corrupt_model_and_picks_up_a_good_one(servers, models):
    root = models["root"]
    with httpx.Client(base_url=servers["watched"].url, timeout=30) as c:
        r = c.post("/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403 and "COLLABKIT_RELOAD_TOKEN" in r.json()["detail"]
        before = c.get("/users/0/recommendations").json()
        config = (root / "watched" / "config.json").read_text()
        (root / "watched" / "config.json").write_text(config[: len(config) // 2])  # a write cut short

        def wait_for_model(condition) -> dict:
            return wait_for(lambda: c.get("/model").json(), condition, "the watcher did not act")

        wait_for_model(lambda m: m["last_reload_error"] and "not valid JSON" in m["last_reload_error"])
        assert c.get("/users/0/recommendations").json() == before
        models["second"].save(root / "watched")
        model = wait_for_model(lambda m: m["reloads"] == 1)
        assert model["info"]["data"] == "planted seed 1" and model["last_reload_error"] is None
        assert c.get("/users/199/recommendations").status_code == 404
