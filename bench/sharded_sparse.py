"""Benchmark: the sparse solver in 1 process (the local, compiled engine) against 2 processes (TorchRec, row-wise shards).

Each case is one ``collabkit train --solver sparse`` command in a fresh process
(``--nproc 2`` for TorchRec), read back from the saved model's info:

* ``rmse``: validation RMSE of both on ``synthetic:1M`` and ``ml-100k``
  (the goal: within 0.005 of each other);
* ``speed``: training ratings per second (median epoch, validation included,
  1% held out) on ``synthetic:1M`` and ``synthetic:10M``;
* for every TorchRec case, the bytes of table rows and Adagrad state each rank
  holds, from the sharding plan (the ``-v`` log line of
  ``collabkit.training.sharded``), and the peak RSS of the largest process.

    python bench/sharded_sparse.py [--cases rmse speed] [--sizes 1M 10M] [--epochs 5] [--bs 8192]

On a 2-core machine the 1-process run's compiled loop uses both cores (2
threads) and each TorchRec rank one: the comparison is per machine, not per core.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

PLAN = re.compile(r"row-wise sharding over (\d+) ranks: (.*)")


def run_case(data: str, nproc: int, epochs: int, bs: int, valid_pct: float | None) -> dict:
    """One training command; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        command = ["-v", "train", "--data", data, "--solver", "sparse", "--epochs", str(epochs), "--bs", str(bs),
                   "--no-progress", "--show", "0", "--ranker", "none", "--nproc", str(nproc)]
        if valid_pct is not None:
            command += ["--valid-pct", str(valid_pct)]
        argv = [sys.executable, "-m", "collabkit", *command, "--out", str(out)]
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
        info = json.loads((out / "config.json").read_text())["info"]
    times = sorted(info["recorder"]["times"])
    epoch_s = times[len(times) // 2]
    n_train = info.get("n_train") or _train_count(done.stdout)
    result = {
        "data": data, "nproc": nproc, "engine": "torchrec" if nproc > 1 else "local", "epochs": epochs, "bs": bs,
        "valid_rmse": round(info["valid_rmse"], 4), "epoch_s": round(epoch_s, 2),
        "ratings_per_s": round(n_train / epoch_s), "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "command": " ".join(["collabkit", *command]),
    }
    plan = PLAN.search(done.stderr)
    if plan:
        result["plan_mib_per_rank"] = plan.group(2)
    return result


def _train_count(stdout: str) -> int:
    """The number of training ratings from the first line of ``collabkit train``'s output."""
    match = re.search(r": ([\d,]+) train / ", stdout)
    if not match:
        raise SystemExit(f"no training count in:\n{stdout[:2000]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["rmse", "speed"], choices=["rmse", "speed"])
    parser.add_argument("--sizes", nargs="+", default=["1M", "10M"], help="synthetic sizes of the speed case")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--bs", type=int, default=8192, help="the global batch of the TorchRec runs")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a case in a process of its own, so that its peak RSS is its own
        data, nproc, epochs, bs, valid_pct = json.loads(args.one)
        print(json.dumps(run_case(data, nproc, epochs, bs, valid_pct)))
        return
    cases = []
    if "rmse" in args.cases:
        cases += [("synthetic:1M", n, args.epochs, args.bs, None) for n in (1, 2)]
        cases += [("ml-100k", n, 20, 1024, None) for n in (1, 2)]
    if "speed" in args.cases:
        cases += [(f"synthetic:{size}", n, 2 if size != "1M" else 3, args.bs, 0.01) for size in args.sizes
                  for n in (1, 2)]
    for case in cases:
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(case)], capture_output=True, text=True)
        if done.returncode:
            print(json.dumps({"case": case, "error": done.stderr.strip().splitlines()[-1:]}), flush=True)
        else:
            print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
