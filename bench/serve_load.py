"""Benchmark: load on `collabkit serve` over loopback, mixing GET recommendations and POST /predict.

Trains DotProductBias on MovieLens 100K (3 epochs; serving speed does not
depend on how well it is trained), starts ``collabkit.serve.run`` in a
subprocess on a free 127.0.0.1 port for each ``--workers`` value, warms it up,
then sends ``--requests`` requests over ``--concurrency`` keep-alive
connections: a share ``--predict-share`` are ``POST /predict`` with
``--pairs`` (user, item) pairs, the rest ``GET /users/{random user}/recommendations?n=10``.
Stops after the request count or ``--max-seconds``, whichever comes first,
and prints one Markdown row per server configuration: throughput, p50 and
p99 latency (per request kind), and the error count (any non-200 answer or
failed connection).

The client is a minimal asyncio HTTP/1.1 client (prebuilt requests,
Content-Length bodies), because on a 2-core machine the client shares the
CPUs with the server and a heavier client (``--client httpx``) measures
itself. The server logs its one JSON line per request to a temporary file,
as it would in production.

``--fold-in-share`` makes that share of the requests ``POST /recommendations``
for someone new (``--fold-in-items`` random films with random 1-5 ratings,
``n=10``). ``--model default`` serves what ``collabkit train`` fits by default
instead (Bayesian PMF for ratings, EASE for rankings): then recommendations and
fold-in are ranked by EASE (``--rank-by rating`` for the rating model's
fold-in, a ridge solve for this model).

    python bench/serve_load.py [--data-dir ../shared/data] [--workers 1 2] [--requests 20000] [--concurrency 32]
    python bench/serve_load.py --model default --fold-in-share 1 --predict-share 0 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from collabkit import CollabDataLoaders, DotProductBias, Learner, Recommender
from collabkit.datasets import load_ml_100k
from collabkit.training.recipe import PRESETS, train

KINDS = ("recommend", "predict", "foldin")


def train_model(data_dir: str, out: Path, model: str = "lesson") -> Recommender:
    data = load_ml_100k(data_dir)
    if model == "default":  # what `collabkit train` fits: Bayesian PMF and EASE
        learn = train(PRESETS["default"], data.ratings[["user", "movie", "rating"]])
        rec = Recommender.from_learner(learn, titles=data.titles.to_dict(), info={"data": "ml-100k"})
        rec.fit_ranker("ease").save(out)
        return rec
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_df(data.ratings, user_name="user", item_name="movie", rating_name="rating",
                                    seed=42, bs=1024)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 50, (0, 5.5)), progress=False)
    learn.fit_one_cycle(3, 1e-2, wd=0.1)
    rec = Recommender.from_learner(learn, titles=data.titles.to_dict(), info={"data": "ml-100k"})
    rec.save(out)
    return rec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, workers: int, log_path: Path) -> subprocess.Popen:
    code = (f"from collabkit.serve import run; run({str(model_dir)!r}, host='127.0.0.1', port={port}, "
            f"workers={workers})")
    log = open(log_path, "wb")  # noqa: SIM115 - the server process writes to it until it ends
    server = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"the server did not answer /health within 120 s; see {log_path}")


def build_requests(
    rec: Recommender, count: int, predict_share: float, pairs: int, seed: int, fold_in_share: float = 0.0,
    fold_in_items: int = 5, rank_by: str | None = None,
) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    users, items = list(rec.users), list(rec.items)
    out = []
    for _ in range(count):
        draw = rng.random()
        if draw < fold_in_share:
            ratings = [{"item": item, "rating": float(rng.randint(1, 5))} for item in rng.sample(items, fold_in_items)]
            body = json.dumps({"ratings": ratings, "n": 10, **({"rank_by": rank_by} if rank_by else {})}).encode()
            head = (f"POST /recommendations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            out.append(("foldin", head + body))
        elif draw < fold_in_share + predict_share:
            body = json.dumps({"pairs": [{"user": rng.choice(users), "item": rng.choice(items)}
                                         for _ in range(pairs)]}).encode()
            head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            out.append(("predict", head + body))
        else:
            path = f"/users/{rng.choice(users)}/recommendations?n=10"
            out.append(("recommend", f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()))
    return out


async def raw_client(port: int, requests: list[tuple[str, bytes]], concurrency: int, max_seconds: float) -> dict:
    """Send every request once over ``concurrency`` keep-alive connections; latency per request kind."""
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    errors = 0
    next_index = 0
    deadline = time.perf_counter() + max_seconds

    async def connection() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < len(requests) and time.perf_counter() < deadline:
                kind, payload = requests[next_index]
                next_index += 1
                start = time.perf_counter()
                try:
                    writer.write(payload)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                    await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies[kind].append(time.perf_counter() - start)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "errors": errors, "sent": next_index}


async def httpx_client(port: int, requests: list[tuple[str, bytes]], concurrency: int, max_seconds: float) -> dict:
    import httpx

    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    errors = 0
    next_index = 0
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def connection() -> None:
            nonlocal next_index, errors
            while next_index < len(requests) and time.perf_counter() < deadline:
                kind, payload = requests[next_index]
                next_index += 1
                head, _, body = payload.partition(b"\r\n\r\n")
                method, path = head.split(b" ")[:2]
                start = time.perf_counter()
                try:
                    r = await client.request(method.decode(), path.decode(), content=body or None,
                                             headers={"content-type": "application/json"} if body else None)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies[kind].append(time.perf_counter() - start)
                errors += r.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(connection() for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "errors": errors, "sent": next_index}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--predict-share", type=float, default=0.2, help="fraction of requests that are POST /predict")
    parser.add_argument("--pairs", type=int, default=10, help="(user, item) pairs per POST /predict")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=120, help="stop a run after this long in any case")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--fold-in-share", type=float, default=0.0, help="fraction that are POST /recommendations")
    parser.add_argument("--fold-in-items", type=int, default=5, help="rated films per fold-in request")
    parser.add_argument("--model", choices=("lesson", "default"), default="lesson",
                        help="lesson: DotProductBias(50), no ranker; default: what collabkit train fits")
    parser.add_argument("--rank-by", choices=("ranking", "rating"), help="rank_by of the fold-in requests")
    args = parser.parse_args()
    torch.set_num_threads(1)
    client = raw_client if args.client == "raw" else httpx_client

    with tempfile.TemporaryDirectory(prefix="collabkit-serve-bench-") as tmp:
        rec = train_model(args.data_dir, Path(tmp) / "model", args.model)
        mix = (args.predict_share, args.pairs)
        extra = {"fold_in_share": args.fold_in_share, "fold_in_items": args.fold_in_items, "rank_by": args.rank_by}
        warmup = build_requests(rec, args.warmup, *mix, seed=1, **extra)
        load = build_requests(rec, args.requests, *mix, seed=2, **extra)
        served = "DotProductBias(50)" if args.model == "lesson" else "the default (Bayesian PMF + EASE)"
        print(f"ml-100k {served}: {args.requests} requests, {args.concurrency} connections, "
              f"{args.predict_share:.0%} POST /predict ({args.pairs} pairs), {args.fold_in_share:.0%} POST "
              f"/recommendations ({args.fold_in_items} films, rank_by {args.rank_by or 'default'}), rest GET "
              f"recommendations n=10; client {args.client}, {os.cpu_count()} CPUs\n")
        print("| workers | requests | seconds | req/s | rec req/s | p50 ms | p99 ms | rec p99 ms | predict p99 ms "
              "| fold-in req/s | fold-in p99 ms | errors |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for workers in args.workers:
            port = free_port()
            server = start_server(Path(tmp) / "model", port, workers, Path(tmp) / f"server-{workers}.log")
            try:
                asyncio.run(client(port, warmup, args.concurrency, args.max_seconds))
                result = asyncio.run(client(port, load, args.concurrency, args.max_seconds))
            finally:
                server.terminate()
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
            lat = result["latencies"]
            every = lat["recommend"] + lat["predict"] + lat["foldin"]
            seconds = result["seconds"]
            def ms(values: list[float], q: float) -> str:
                return f"{percentile(values, q) * 1000:.1f}" if values else "-"

            print(f"| {workers} | {result['sent']} | {seconds:.1f} | {len(every) / seconds:,.0f} | "
                  f"{len(lat['recommend']) / seconds:,.0f} | {ms(every, 0.5)} | {ms(every, 0.99)} | "
                  f"{ms(lat['recommend'], 0.99)} | {ms(lat['predict'], 0.99)} | "
                  f"{len(lat['foldin']) / seconds:,.0f} | {ms(lat['foldin'], 0.99)} | {result['errors']} |",
                  flush=True)


if __name__ == "__main__":
    main()
