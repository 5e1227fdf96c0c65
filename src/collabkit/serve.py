"""HTTP API over a saved model directory: what ``collabkit serve`` runs.

:func:`create_app` builds a FastAPI app that answers from one model directory
(written by ``collabkit train --out`` or :meth:`Recommender.save`);
:func:`run` serves it with uvicorn. Endpoints (full schema at ``/docs`` and
``/openapi.json``; examples in ``docs/serving.md``)::

    GET  /                                        the page: search, rate, recommendations, taste map, model card
    GET  /health                                  is a model loaded
    GET  /model                                   config, counts, training record, dataset license, reload state
    GET  /users/{user_id}/recommendations?n=&exclude_seen=
    GET  /items/search?q=&n=                      titles containing q (or the closest titles)
    GET  /items/{item_id}/similar?n=              item id or URL-encoded title
    GET  /map?n=&item=                            the item factors' first two principal components
    POST /predict                                 {"pairs": [{"user", "item"}, ...], "strict": false}
    POST /recommendations                         a new user's ratings -> fold-in -> top n
    POST /reload                                  re-read the model directory (bearer token)

Errors: an unknown or untrained id is 404 naming it; a malformed body, a bad
parameter or an out-of-range ``n`` is 422; a body over ``max_body_bytes`` is
413. Error bodies are ``{"detail": ...}`` and never hold a stack trace.

Safety: requests never name files. The only file the server reads is the
model directory it was started with, re-read on ``POST /reload`` or when
``watch_interval`` sees it change; weights load as safetensors (no pickle).
A new model is loaded and checked (finite weights, every question answered
once) before it replaces the old one; if it fails, the old one keeps serving
and the reason is reported.

Concurrency: a question about one user or a batch of pairs takes well under
a millisecond of CPU, so those handlers are ``async def`` and answer on the
event loop: a thread-pool hop costs about as much as the answer, and under the
GIL the pool adds no parallelism (measured in ``docs/serving.md``). Fold-in
(a small solve or a few, milliseconds) and reload (file reads) are plain ``def`` handlers that
FastAPI runs in its thread pool, so they never stall the loop. Torch runs one
intra-op thread per process (``torch_threads``): parallelism comes from
``workers`` (processes). A loaded model is never mutated; a reload swaps one
reference.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic_core import PydanticCustomError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from collabkit.datasets import REGISTRY
from collabkit.errors import CollabkitError, ConfigError, DataError, ModelFileError, UnknownIdError
from collabkit.io import FILES
from collabkit.recommend import Recommender

log = logging.getLogger("collabkit.serve")

RELOAD_TOKEN_ENV = "COLLABKIT_RELOAD_TOKEN"
"""The environment variable holding the bearer token of ``POST /reload``; unset: reload is disabled."""

MAX_N = 100
"""The largest ``n`` a request may ask for."""
MAX_BATCH = 1000
"""The most (user, item) pairs in one ``POST /predict``, and ratings in one ``POST /recommendations``."""
DOCS_ASSETS = "/docs/assets"
"""Where the Swagger UI files of ``/docs`` are served from (this server, never a CDN)."""
MAX_ERRORS_SHOWN = 20
"""How many validation errors a 422 lists; the rest are counted, so an error answer stays small."""
MAX_ID_LENGTH = 300
"""The longest text id or title accepted."""
MAX_BODY_BYTES = 1 << 20
"""Default request body limit (1 MiB); larger bodies get 413."""
MAX_OBJECT_KEYS = 16
"""The most keys any JSON object in a request body may have (the API's have at most 4). A wider object gets one
422 error before validation would build an error for every unknown key (see ``_Body``)."""
REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send one whole request (headers and body), counted from its first byte or
from the moment it connects; a stalled connection then gets 408 and is closed."""
KEEP_ALIVE_TIMEOUT = 5
"""Seconds an idle keep-alive connection stays open between requests (uvicorn's own default, set on purpose)."""
SHUTDOWN_TIMEOUT = 10
"""Seconds that requests in flight get to finish on shutdown before their connections are closed."""
MAP_POINTS = 400
"""How many of the most-rated items ``GET /map`` places by default."""
MAX_MAP_POINTS = 2000
"""The most items ``GET /map`` places (its ``n``)."""
MAP_EXTREMES = 5
"""How many items ``GET /map`` names at each end of an axis."""
PAGE = "/page"
"""Where the files of the page at ``/`` are served from (they ship in the package: ``collabkit/page``)."""

# Environment variables through which :func:`run` hands its settings to worker processes
# (uvicorn starts each worker by importing an app factory, so they cannot be passed as arguments).
_ENV_MODEL_DIR = "COLLABKIT_SERVE_MODEL_DIR"
_ENV_WATCH = "COLLABKIT_SERVE_WATCH_INTERVAL"
_ENV_MAX_BODY = "COLLABKIT_SERVE_MAX_BODY_BYTES"
_ENV_TORCH_THREADS = "COLLABKIT_SERVE_TORCH_THREADS"
_ENV_LOG_LEVEL = "COLLABKIT_SERVE_LOG_LEVEL"
_ENV_REQUEST_TIMEOUT = "COLLABKIT_SERVE_REQUEST_TIMEOUT"


# --- request and response bodies ------------------------------------------------------------
Id = Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)] | Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
"""A raw id in a request: an integer, or a string (text ids, titles, or digits that the model's int ids parse)."""
OutId = int | str
"""A raw id in a response, as the model's vocabulary holds it."""


class _Body(BaseModel):
    """A request body's object: unknown keys are refused, and an object with more than :data:`MAX_OBJECT_KEYS`
    is refused whole before its fields are looked at (one error, not one per unknown key)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _not_too_wide(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > MAX_OBJECT_KEYS:
            raise PydanticCustomError(
                "too_many_keys", "an object in the body has {keys} keys; this API's objects have at most {most} "
                "(see /docs for the fields)", {"keys": len(data), "most": MAX_OBJECT_KEYS})
        return data


class Pair(_Body):
    user: Id
    item: Id = Field(description="item id or title")


class PredictRequest(_Body):
    pairs: list[Pair] = Field(min_length=1, max_length=MAX_BATCH)
    strict: bool = Field(False, description="404 on an id the model never trained on, instead of the average fallback")


class Prediction(BaseModel):
    user: OutId
    item: OutId
    prediction: float
    fallback: Literal["", "user", "item", "user+item"] = Field(
        description='"" for a plain prediction, else the side(s) replaced by the average trained user/item'
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]


RankBy = Literal["ranking", "rating"]
RANK_BY_HELP = ("ranking: the ranking model (the default when the model has one); "
                "rating: highest predicted rating first, the lesson's way")


class Rating(_Body):
    item: Id = Field(description="item id or title")
    rating: float | None = Field(
        None, ge=-1e6, le=1e6, allow_inf_nan=False,
        description="the rating; leave it out (for every item) to say only that they liked, watched or bought it: "
        "the ranking model needs no ratings",
    )


class NewUserRequest(_Body):
    ratings: list[Rating] = Field(min_length=1, max_length=MAX_BATCH)
    n: int = Field(10, ge=1, le=MAX_N)
    exclude_seen: bool = Field(True, description="leave out the items rated in this request")
    rank_by: RankBy | None = Field(None, description=RANK_BY_HELP)


class Recommendation(BaseModel):
    rank: int
    item: OutId
    title: str | None
    score: float = Field(description="the ranking model's score, or the predicted rating when ranking by rating")


class UserRecommendations(BaseModel):
    user: OutId
    recommendations: list[Recommendation]


class NewUserRecommendations(BaseModel):
    recommendations: list[Recommendation]


class SimilarItem(BaseModel):
    item: OutId
    title: str | None
    similarity: float = Field(
        description="EASE: the item-item weight; iALS and the rating model: cosine similarity of the item vectors"
    )


class SimilarItems(BaseModel):
    item: OutId
    title: str | None
    similar: list[SimilarItem]


class FoundItem(BaseModel):
    item: OutId
    title: str | None
    ratings: int | None = Field(description="training ratings of the item (null when the model kept no history)")


class SearchResults(BaseModel):
    query: str
    match: Literal["contains", "close", "none"] = Field(
        description="contains: titles holding the query (ignoring case); close: none does, these are the "
        "closest titles; none: nothing is close"
    )
    items: list[FoundItem]


class MapPoint(FoundItem):
    x: float = Field(description="coordinate on the first principal component")
    y: float = Field(description="coordinate on the second principal component")
    top: bool = Field(description="one of the most-rated items the components were fitted on (false: an asked-for item "
                                  "placed on them)")


class MapAxis(BaseModel):
    component: int = Field(description="1: x, 2: y")
    explained: float = Field(description="share of the factors' variance along this axis")
    low: list[FoundItem] = Field(description="the items at the low end, lowest first")
    high: list[FoundItem] = Field(description="the items at the high end, highest first")


class TasteMap(BaseModel):
    available: bool
    reason: str | None = Field(description="why there is no map (the model has no item factors, ...)")
    points: list[MapPoint]
    axes: list[MapAxis]


class DatasetCard(BaseModel):
    name: str
    ratings: str = Field(description="the dataset's size, as its publisher states it")
    license: str
    url: str


class Health(BaseModel):
    status: Literal["ok"]
    loaded_at: str


class ModelDescription(BaseModel):
    model_class: str | None = Field(description="the rating model; null for implicit feedback (ranking only)")
    model_hyperparameters: dict[str, Any] | None
    ranker: str | None = Field(description="the ranking model behind recommendations and similar items, if any")
    ranker_hyperparameters: dict[str, Any] | None
    predicts_ratings: bool
    columns: dict[str, str]
    users: int
    items: int
    trained_users: int
    trained_items: int
    has_titles: bool
    has_history: bool = Field(description="whether seen items are known (needed for exclude_seen)")
    training_ratings: int | None = Field(description="ratings (or interactions) trained on; null without a history")
    rating_scale: list[float] | None = Field(description="[lowest, highest] training rating; null for implicit feedback")
    dataset: DatasetCard | None = Field(description="the named dataset the model was trained on (info.data), "
                                                    "with its license; null for a file or synthetic data")
    info: dict[str, Any] = Field(description="what training recorded: data, trained_at, config, valid_rmse, ...")
    loaded_at: str
    reloads: int = Field(description="successful reloads since the server started")
    last_reload_error: str | None = Field(description="why the last refused model was refused")

    model_config = ConfigDict(protected_namespaces=())


class ReloadResult(BaseModel):
    reloaded: Literal[True]
    loaded_at: str
    users: int
    items: int


class ErrorBody(BaseModel):
    detail: str


# --- the model being served -----------------------------------------------------------------
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _finite(value: Any) -> Any:
    """JSON-safe copy of a training record: NaN and inf become ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _directory_signature(path: Path) -> tuple | None:
    """What changes when a model directory is replaced or a file in it is rewritten; ``None`` if unreadable."""
    try:
        parts: list[tuple] = [(path.stat().st_ino,)]
        for name in FILES:
            try:
                st = (path / name).stat()
            except FileNotFoundError:
                parts.append((name,))
                continue
            parts.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(parts)
    except OSError:
        return None


class ServedModel:
    """One loaded, checked model and the precomputed state its hot path needs; never mutated.

    ``recommend`` answers a trained user with :meth:`Recommender.top_n` (the
    row-level top-N) and builds the JSON records directly, skipping the
    DataFrame that :meth:`Recommender.recommend` returns; the answer is the
    same (``tests/test_serve.py`` checks). Any other case (unknown user, no
    history) goes through ``Recommender.recommend`` itself, for its errors.
    """

    def __init__(self, rec: Recommender, loaded_at: str) -> None:
        self.rec = rec
        self.loaded_at = loaded_at
        self.item_ids = rec.items.ids.tolist()
        self.item_titles = [_title(t) for t in rec.titles] if rec.titles is not None else None
        self.user_trained = rec.user_trained
        self._maps: dict[int, Any] = {}  # /map's PCA of the n most-rated items, by n: the same for every request

    @classmethod
    def load(cls, model_dir: Path) -> ServedModel:
        """Load ``model_dir`` and ask it one of each question; raises ModelFileError saying what is wrong."""
        try:
            rec = Recommender.load(model_dir)  # (ranker weights are checked as they load)
        except ModelFileError:
            raise
        except Exception as exc:  # whatever a malformed file provokes, the server refuses it and keeps serving
            raise ModelFileError(f"{str(model_dir)!r} cannot be loaded: {exc!r}") from exc
        for name, tensor in (rec.model.state_dict().items() if rec.model is not None else ()):
            if not torch.isfinite(tensor).all():
                raise ModelFileError(f"{str(model_dir)!r}: weights {name!r} contain NaN or inf; refusing this model")
        trained_users = np.flatnonzero(rec.user_trained)
        trained_items = np.flatnonzero(rec.item_trained)
        if len(trained_users) == 0 or len(trained_items) == 0:
            raise ModelFileError(f"{str(model_dir)!r}: the model has no trained users or items")
        user, item = rec.users[int(trained_users[0])], rec.items[int(trained_items[0])]
        try:
            rec.recommend([user], n=1, exclude_seen=rec.history is not None)
            if rec.ranker is None or rec.ranker.item_similarity or rec.predicts_ratings:
                rec.similar_items(item, n=1)
            if rec.ranker is not None:
                rec.recommend_new_user([item], n=1)
            if rec.predicts_ratings:
                rating = float(rec.predict([user], [item], strict=True)["prediction"].iloc[0])
                low, high = rec.rating_scale or (rating, rating)  # a y_range model may predict past the scale
                rec.fold_in({item: min(max(rating, low), high)}, max_iter=5)
        except (CollabkitError, ValueError, KeyError, IndexError, RuntimeError, TypeError) as exc:
            raise ModelFileError(f"{str(model_dir)!r} loads but cannot answer questions: {exc!r}") from exc
        return cls(rec, _now())

    def user_row(self, user: str) -> int | None:
        (parsed,) = self.rec.users.parse([user])
        row = self.rec.users.o2i.get(parsed) if isinstance(parsed, (int, str)) else None
        return row if row is not None and self.user_trained[row] else None

    def recommend(
        self, user: str, n: int, exclude_seen: bool, rank_by: str | None = None
    ) -> tuple[Any, list[dict[str, Any]]]:
        rec = self.rec
        row = self.user_row(user)
        if row is None or (exclude_seen and rec.history is None):
            (parsed,) = rec.users.parse([user])
            frame = rec.recommend([parsed], n=n, exclude_seen=exclude_seen, rank_by=rank_by)  # raises, naming why
            return parsed, _recommendation_records(frame)
        scores, rows = rec.top_n(np.array([row]), n, exclude=rec.history if exclude_seen else None, rank_by=rank_by)
        records = []
        for rank, (score, item_row) in enumerate(zip(scores[0].tolist(), rows[0].tolist()), start=1):
            if not math.isfinite(score):
                break
            title = self.item_titles[item_row] if self.item_titles is not None else None
            records.append({"rank": rank, "item": self.item_ids[item_row], "title": title, "score": score})
        return rec.users[row], records


    def taste_map(self, n: int, items: list[str]) -> dict[str, Any]:
        """``GET /map``: :func:`collabkit.interpret.item_pca` of the ``n`` most-rated items, with ``items``
        (ids or titles) placed on the same two components."""
        from collabkit.interpret import item_pca  # (brings matplotlib: imported on the first map only)

        rec = self.rec
        if not rec.predicts_ratings:
            ranker = rec.ranker.name if rec.ranker is not None else "a ranking model"
            return _no_map(f"this model was trained on implicit feedback and ranks with {ranker}, which has no "
                           "item factors to map")
        pca = self._maps.get(n)
        if pca is None:
            pca = self._maps.setdefault(n, item_pca(rec, n_components=2, top=n))
        if len(pca.explained) < 2:
            return _no_map("the item factors have fewer than two dimensions")
        shown = set(pca.frame["item"].tolist())
        extra = pca.project(rec, items)
        extra = extra[~extra["item"].isin(shown)].drop_duplicates("item")
        points = [{**found, "x": x, "y": y, "top": top}
                  for frame, top in ((pca.frame, True), (extra, False))
                  for found, x, y in zip(_found(frame), frame["pc1"].tolist(), frame["pc2"].tolist())]
        axes = []
        for component in (1, 2):
            low, high = pca.extremes(component, MAP_EXTREMES)
            axes.append({"component": component, "explained": float(pca.explained[component - 1]),
                         "low": _found(low), "high": _found(high)})
        return {"available": True, "reason": None, "points": points, "axes": axes}


def _no_map(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason, "points": [], "axes": []}


def _found(frame) -> list[dict[str, Any]]:
    """``FoundItem`` records of a frame from :meth:`Recommender.item_table` (item, [title], [ratings])."""
    ratings = frame["ratings"].tolist() if "ratings" in frame else [None] * len(frame)
    return [{"item": i, "title": t, "ratings": r} for i, t, r in zip(frame["item"].tolist(), _titles(frame), ratings)]


def _dataset_card(name: Any) -> dict[str, str] | None:
    """The registry's entry for the named dataset a model was trained on (``None`` for files and synthetic data)."""
    entry = REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        return None
    return {"name": entry.name, "ratings": entry.ratings, "license": entry.license, "url": entry.url}


def _title(value: Any) -> str | None:
    """A title for JSON: a missing one (``None``, NaN) is ``None``."""
    return value if isinstance(value, str) else None


def _titles(frame) -> list[str | None]:
    return [_title(t) for t in frame["title"].tolist()] if "title" in frame else [None] * len(frame)


def _recommendation_records(frame) -> list[dict[str, Any]]:
    titles = _titles(frame)
    return [
        {"rank": rank, "item": item, "title": title, "score": score}
        for rank, item, title, score in zip(
            frame["rank"].tolist(), frame["item"].tolist(), titles, frame["score"].tolist()
        )
    ]


class ModelHolder:
    """The model being served, and how it is replaced: reload on request or when the directory changes.

    Args:
        model_dir: the only directory this server ever reads.
        watch_interval: seconds between checks of the directory; ``None``: no watching.
    """

    def __init__(self, model_dir: str | Path, watch_interval: float | None = None) -> None:
        if watch_interval is not None and not watch_interval > 0:
            raise ConfigError(f"watch_interval must be a positive number of seconds or None, got {watch_interval!r}")
        self.model_dir = Path(model_dir)
        self.watch_interval = watch_interval
        self._signature = _directory_signature(self.model_dir)
        self.current = ServedModel.load(self.model_dir)
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def reload(self) -> ServedModel:
        """Load the directory again and swap it in; on failure keep the old model and raise ModelFileError."""
        with self._lock:
            self._signature = _directory_signature(self.model_dir)
            try:
                new = ServedModel.load(self.model_dir)
            except ModelFileError as exc:
                self.last_reload_error = f"{_now()}: {exc}"
                log.warning(json.dumps({"event": "reload_refused", "reason": str(exc)}))
                raise
            self.current = new
            self.reloads += 1
            self.last_reload_error = None
            log.warning(json.dumps({"event": "reloaded", "loaded_at": new.loaded_at, "users": len(new.rec.users),
                                    "items": len(new.rec.items)}))
            return new

    def start_watching(self) -> None:
        if self.watch_interval is None or self._watcher is not None:
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="collabkit-serve-watch", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_interval):
            signature = _directory_signature(self.model_dir)
            if signature is None or signature == self._signature:
                continue
            try:
                self.reload()
            except ModelFileError:
                pass  # logged and recorded by reload(); retried when the directory changes again
            except Exception as exc:  # never let one bad directory end the watching for good
                self.last_reload_error = f"{_now()}: {exc!r}"
                log.error(json.dumps({"event": "reload_failed", "reason": repr(exc)}))


# --- middleware -------------------------------------------------------------------------------
class RequestGuard:
    """ASGI middleware: refuse bodies over ``max_body_bytes`` (413), and log one JSON line per request.

    The log line (logger ``collabkit.serve``, level INFO) holds ``method``,
    ``path``, ``status`` and ``latency_ms`` (until the response is complete).
    """

    def __init__(self, app: Callable, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_logged(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
                await self.app(scope, receive, send_logged)
            else:
                body = await self._read_body(scope, receive)
                if body is None:
                    await _too_large(self.max_body_bytes)(scope, receive, send_logged)
                else:
                    await self.app(scope, _replay(body, receive), send_logged)
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info(json.dumps({
                    "method": scope["method"],
                    "path": scope["path"][:MAX_ID_LENGTH],
                    "status": status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                }, ensure_ascii=False))

    async def _read_body(self, scope, receive) -> bytes | None:
        """The whole body, or ``None`` once it is known to exceed the limit."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        return None
                except ValueError:
                    pass
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body is larger than the {limit}-byte limit"}, status_code=413)


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


# --- the app ----------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description=f"the token in ${RELOAD_TOKEN_ENV} of the server")

def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def create_app(
    model_dir: str | Path,
    reload_token: str | None = None,
    watch_interval: float | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    torch_threads: int | None = 1,
) -> FastAPI:
    """The FastAPI app serving the model directory ``model_dir``.

    Args:
        model_dir: a model directory written by ``collabkit train --out`` or
            :meth:`Recommender.save`; loaded and checked now (ModelFileError if bad).
        reload_token: the bearer token ``POST /reload`` requires; ``None``
            disables the endpoint (:func:`run` reads it from ``$COLLABKIT_RELOAD_TOKEN``).
        watch_interval: check the directory for a new model every this many
            seconds; ``None``: only ``POST /reload`` replaces the model.
        max_body_bytes: request bodies over this size get 413.
        torch_threads: ``torch.set_num_threads`` for this process (``None``: leave it).
    """
    if reload_token is not None and not reload_token.strip():
        raise ConfigError("reload_token must be a non-empty string or None (reload disabled)")
    if not (isinstance(max_body_bytes, int) and max_body_bytes > 0):
        raise ConfigError(f"max_body_bytes must be a positive integer, got {max_body_bytes!r}")
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    holder = ModelHolder(model_dir, watch_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start_watching()
        yield
        holder.stop_watching()

    app = FastAPI(
        title="collabkit",
        summary="Recommendations, rating predictions and similar items from a saved collabkit model.",
        lifespan=lifespan,
        docs_url=None,  # served below from files on this machine
        redoc_url=None,
    )
    _add_docs_page(app)
    _add_page(app)
    app.state.holder = holder
    not_found = {404: {"model": ErrorBody, "description": "unknown or untrained id"}}

    @app.exception_handler(UnknownIdError)
    async def unknown_id(request, exc: UnknownIdError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(DataError)
    async def bad_data(request, exc: DataError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(ConfigError)
    async def bad_setting(request, exc: ConfigError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        detail = [{"loc": [p[:MAX_ID_LENGTH] if isinstance(p, str) else p for p in e.get("loc", ())],
                   "msg": str(e.get("msg", ""))[:200],
                   "type": e.get("type", "")} for e in errors[:MAX_ERRORS_SHOWN]]
        if len(errors) > MAX_ERRORS_SHOWN:  # a body with 60,000 bad keys must not get a 5 MB answer
            detail.append({"loc": [], "msg": f"... and {len(errors) - MAX_ERRORS_SHOWN} more errors", "type": "more"})
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error; the server log has the details")

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        return {"status": "ok", "loaded_at": holder.current.loaded_at}

    @app.get("/model", response_model=ModelDescription)
    async def model() -> dict:
        served = holder.current
        rec = served.rec
        return {
            "model_class": type(rec.model).__name__ if rec.model is not None else None,
            "model_hyperparameters": _finite(rec.model.config()) if rec.model is not None else None,
            "ranker": rec.ranker.name if rec.ranker is not None else None,
            "ranker_hyperparameters": _finite(rec.ranker.config()) if rec.ranker is not None else None,
            "predicts_ratings": rec.predicts_ratings,
            "columns": rec.columns,
            "users": len(rec.users),
            "items": len(rec.items),
            "trained_users": int(rec.user_trained.sum()),
            "trained_items": int(rec.item_trained.sum()),
            "has_titles": rec.titles is not None,
            "has_history": rec.history is not None,
            "training_ratings": int(rec.history.item_counts.sum()) if rec.history is not None else None,
            "rating_scale": list(rec.rating_scale) if rec.rating_scale is not None else None,
            "dataset": _dataset_card(rec.info.get("data")),
            "info": _finite(rec.info),
            "loaded_at": served.loaded_at,
            "reloads": holder.reloads,
            "last_reload_error": holder.last_reload_error,
        }

    @app.get("/users/{user_id}/recommendations", response_model=UserRecommendations, responses=not_found)
    async def user_recommendations(
        user_id: Annotated[str, PathParam(max_length=MAX_ID_LENGTH)],
        n: Annotated[int, Query(ge=1, le=MAX_N, description="how many items")] = 10,
        exclude_seen: Annotated[bool, Query(description="leave out items the user has rated")] = True,
        rank_by: Annotated[RankBy | None, Query(description=RANK_BY_HELP)] = None,
    ) -> dict:
        user, records = holder.current.recommend(user_id, n, exclude_seen, rank_by)
        return {"user": user, "recommendations": records}

    @app.get("/items/search", response_model=SearchResults)
    def search_items(
        q: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, description="part of a title, any case")],
        n: Annotated[int, Query(ge=1, le=MAX_N, description="how many items")] = 10,
    ) -> dict:
        frame = holder.current.rec.search_titles(q, n)
        match = str(frame["match"].iloc[0]) if len(frame) else "none"
        return {"query": q, "match": match, "items": _found(frame)}

    @app.get("/map", response_model=TasteMap, responses=not_found)
    def taste_map(
        n: Annotated[int, Query(ge=2, le=MAX_MAP_POINTS, description="the most-rated items the components are "
                                                                       "fitted on, and shown")] = MAP_POINTS,
        item: Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]] | None, Query(
            max_length=MAX_N, description="items (ids or titles, repeat the parameter) to place on the map too")] = None,
    ) -> dict:
        return holder.current.taste_map(n, item or [])

    @app.get("/items/{item_id:path}/similar", response_model=SimilarItems, responses=not_found)
    async def similar_items(
        item_id: Annotated[str, PathParam(max_length=MAX_ID_LENGTH, description="item id or URL-encoded title")],
        n: Annotated[int, Query(ge=1, le=MAX_N, description="how many items")] = 10,
        min_ratings: Annotated[int, Query(ge=0, le=2**31, description="only items with this many training ratings")] = 0,
        rank_by: Annotated[RankBy | None, Query(description=RANK_BY_HELP)] = None,
    ) -> dict:
        rec = holder.current.rec
        row = rec.item_row(item_id)
        frame = rec.similar_items(item_id, n=n, min_ratings=min_ratings, rank_by=rank_by)
        titles = _titles(frame)
        return {
            "item": rec.items[row],
            "title": _title(rec.titles[row]) if rec.titles is not None else None,
            "similar": [{"item": i, "title": t, "similarity": s}
                        for i, t, s in zip(frame["item"].tolist(), titles, frame["similarity"].tolist())],
        }

    @app.post("/predict", response_model=PredictResponse, responses=not_found)
    async def predict(body: PredictRequest) -> dict:
        rec = holder.current.rec
        users = rec.users.parse([p.user for p in body.pairs])
        items = [p.item for p in body.pairs]
        predictions, fallback = rec.predict_values(users, items, strict=body.strict)
        return {"predictions": [
            {"user": u, "item": i, "prediction": p, "fallback": f}
            for u, i, p, f in zip(users, items, predictions.tolist(), fallback.tolist())
        ]}

    @app.post("/recommendations", response_model=NewUserRecommendations, responses=not_found)
    def new_user_recommendations(body: NewUserRequest) -> dict:
        served = holder.current
        given = {r.rating is not None for r in body.ratings}
        if len(given) > 1:
            raise DataError("give a rating for every item, or for none (the ranking model needs none)")
        ratings: dict[Any, float] | list[Any] = {}
        if True in given:
            for r in body.ratings:
                ratings[r.item] = r.rating  # an item given twice: the last rating counts
        else:
            ratings = list(dict.fromkeys(r.item for r in body.ratings))
        frame = served.rec.recommend_new_user(ratings, n=body.n, exclude_seen=body.exclude_seen, rank_by=body.rank_by)
        return {"recommendations": _recommendation_records(frame)}

    @app.post(
        "/reload",
        response_model=ReloadResult,
        responses={
            401: {"model": ErrorBody, "description": "no bearer token"},
            403: {"model": ErrorBody, "description": "wrong token, or reload disabled"},
            409: {"model": ErrorBody, "description": "the new model was refused; the old one keeps serving"},
        },
    )
    def reload(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> dict:
        if reload_token is None:
            raise HTTPException(403, f"reload is disabled: start the server with ${RELOAD_TOKEN_ENV} set")
        if credentials is None:
            raise HTTPException(401, "send the reload token as 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), reload_token.encode()):
            raise HTTPException(403, "wrong reload token")
        try:
            new = holder.reload()
        except ModelFileError as exc:
            raise HTTPException(409, f"new model refused, still serving the one loaded at "
                                     f"{holder.current.loaded_at}: {exc}") from None
        return {"reloaded": True, "loaded_at": new.loaded_at, "users": len(new.rec.users), "items": len(new.rec.items)}

    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    return app


def _add_docs_page(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the files the ``swagger-ui-bundle-v2`` package ships, so the page works
    offline (FastAPI's own page loads them from a CDN, and is blank without the internet). Without that
    package (it comes with the serve extra) the CDN page is served instead, and a warning says so."""
    from fastapi.openapi.docs import get_swagger_ui_html

    assets: dict[str, str] = {}
    try:
        from starlette.staticfiles import StaticFiles
        from swagger_ui_bundle import swagger_ui_path

        app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")
        assets = {"swagger_js_url": f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                  "swagger_css_url": f"{DOCS_ASSETS}/swagger-ui.css",
                  "swagger_favicon_url": f"{DOCS_ASSETS}/favicon-32x32.png"}
    except ImportError:
        log.warning("swagger-ui-bundle-v2 is not installed: /docs loads Swagger UI from a CDN and is blank "
                    "offline (pip install 'collabkit[serve]')")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="collabkit API", **assets)


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for receiving each request.

    uvicorn closes idle keep-alive connections, but a client that connects and
    sends nothing, half a header, or less body than it announced holds its
    connection (and a file descriptor) for ever. Here the clock starts when the
    connection opens or a request's first byte arrives, and stops when the
    whole request is in; past ``$COLLABKIT_SERVE_REQUEST_TIMEOUT`` seconds the
    client gets 408 and the connection is closed.
    """

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._limit = float(os.environ.get(_ENV_REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        self._deadline = self.loop.call_later(self._limit, self._request_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._deadline = self.loop.call_later(self._limit, self._request_too_slow)

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _request_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            # (no request yet, a stalled next request on a kept-alive connection, or one not answered yet)
            body = b'{"detail":"the request did not arrive whole in time"}'
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        log.info(json.dumps({"event": "request timeout", "client": self.client and self.client[0],
                             "seconds": self._limit}))
        self.transport.close()


def _add_page(app: FastAPI) -> None:
    """``/``: the page (plain HTML, CSS and JS shipped in ``collabkit/page``, no build step, no CDN). It asks
    only the public API above, so what it shows follows a reloaded model on the next request."""
    from fastapi.responses import FileResponse
    from starlette.staticfiles import StaticFiles

    folder = Path(str(resources.files("collabkit") / "page"))
    app.mount(PAGE, StaticFiles(directory=folder), name="page")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(folder / "index.html", headers={"Cache-Control": "no-cache"})


def app_from_environment() -> FastAPI:
    """The app factory uvicorn's worker processes import (see :func:`run`); settings come from the environment."""
    model_dir = os.environ.get(_ENV_MODEL_DIR)
    if not model_dir:
        raise ModelFileError(f"${_ENV_MODEL_DIR} is not set: start the server with `collabkit serve --model DIR`")
    _configure_logging(os.environ.get(_ENV_LOG_LEVEL, "info"))
    watch = os.environ.get(_ENV_WATCH)
    threads = os.environ.get(_ENV_TORCH_THREADS)
    return create_app(
        model_dir,
        reload_token=os.environ.get(RELOAD_TOKEN_ENV) or None,
        watch_interval=float(watch) if watch else None,
        max_body_bytes=int(os.environ.get(_ENV_MAX_BODY, MAX_BODY_BYTES)),
        torch_threads=int(threads) if threads else None,
    )


def _configure_logging(level: str) -> None:
    """Request log lines go to stderr as they are (each is one JSON object)."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())


def run(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    watch_interval: float | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    torch_threads: int = 1,
    log_level: str = "info",
    request_timeout: float = REQUEST_TIMEOUT,
) -> None:
    """Serve ``model_dir`` with uvicorn until interrupted; see :func:`create_app` for the arguments.

    The reload token comes from ``$COLLABKIT_RELOAD_TOKEN``. The model is
    loaded and checked once before the server starts, so a bad directory is a
    ModelFileError here, not a crash in a worker. With ``workers > 1`` each
    worker process holds its own copy, and ``POST /reload`` reloads only the
    worker that answers it: use ``watch_interval`` so that every worker reloads.

    Timeouts, so that a slow or stalled client cannot hold a connection for
    good: a request must arrive whole within ``request_timeout`` seconds (else
    408 and the connection closes), an idle keep-alive connection closes after
    :data:`KEEP_ALIVE_TIMEOUT`, and shutdown waits :data:`SHUTDOWN_TIMEOUT` for
    requests in flight.
    """
    import uvicorn

    if not (isinstance(workers, int) and workers >= 1):
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise ConfigError(f"port must be an integer in 0..65535, got {port!r}")
    _configure_logging(log_level)
    token = os.environ.get(RELOAD_TOKEN_ENV) or None
    if workers > 1 and token is not None and watch_interval is None:
        log.warning(f"with {workers} workers, POST /reload reloads only the worker that answers it; "
                    "add a watch interval so that every worker picks up a new model")
    if not (isinstance(request_timeout, int | float) and 0 < request_timeout < math.inf):
        raise ConfigError(f"request_timeout must be a positive number of seconds, got {request_timeout!r}")
    os.environ[_ENV_REQUEST_TIMEOUT] = str(request_timeout)  # read by DeadlineProtocol, in every worker
    options = {"host": host, "port": port, "access_log": False, "log_level": log_level, "server_header": False,
               "http": DeadlineProtocol, "timeout_keep_alive": KEEP_ALIVE_TIMEOUT,
               "timeout_graceful_shutdown": SHUTDOWN_TIMEOUT}
    if workers == 1:
        app = create_app(model_dir, token, watch_interval, max_body_bytes, torch_threads)
        uvicorn.run(app, **options)
        return
    ServedModel.load(Path(model_dir))  # fail here, once, on a bad directory
    os.environ[_ENV_MODEL_DIR] = str(Path(model_dir).resolve())
    os.environ[_ENV_WATCH] = "" if watch_interval is None else str(watch_interval)
    os.environ[_ENV_MAX_BODY] = str(max_body_bytes)
    os.environ[_ENV_TORCH_THREADS] = str(torch_threads)
    os.environ[_ENV_LOG_LEVEL] = log_level
    uvicorn.run("collabkit.serve:app_from_environment", factory=True, workers=workers, **options)
