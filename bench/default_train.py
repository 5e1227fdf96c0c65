"""Benchmark: the default ``collabkit train`` on MovieLens 100K, from data load to final metrics.

Runs the command itself (``collabkit train --data ml-100k``: the random 80/20
split, seed 42, the default preset) and reads the "s in all" it prints, which
counts loading, splitting, building the loaders, the fit and the final
predictions, not Python start-up and imports. The whole process's wall time,
imports included, is reported beside it. ``--sweeps`` adds rows with a
shorter or longer Gibbs chain (burn-in and thinning as in the preset).

    python bench/default_train.py [--data-dir ../shared/data] [--runs 5] [--sweeps 60 100]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run(data_dir: str, extra: list[str]) -> tuple[float, float, float]:
    """``(valid RMSE, data-to-metrics seconds, whole-process seconds)`` of one run."""
    command = [sys.executable, "-m", "collabkit.cli", "train", "--data", "ml-100k", "--data-dir", data_dir,
               "--no-progress", "--show", "0", *extra]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - started
    found = re.search(r"valid RMSE ([0-9.]+) .*\(([0-9.]+) s in all\)", out)
    if found is None:
        raise SystemExit(f"unexpected output from {' '.join(command)}:\n{out}")
    return float(found.group(1)), float(found.group(2)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sweeps", type=int, nargs="*", default=[], help="also time these chain lengths")
    args = parser.parse_args()
    print("| preset | valid RMSE | data to metrics (median s) | runs (s) | whole process, imports included (median s) |")
    print("|---|---:|---:|---|---:|")
    for sweeps in [None, *args.sweeps]:
        extra = [] if sweeps is None else ["--sweeps", str(sweeps)]
        results = [run(args.data_dir, extra) for _ in range(args.runs)]
        label = "default" if sweeps is None else f"default, --sweeps {sweeps}"
        times = [t for _, t, _ in results]
        walls = [w for _, _, w in results]
        print(f"| {label} | {results[0][0]:.4f} | {statistics.median(times):.2f} | {', '.join(map(str, times))} "
              f"| {statistics.median(walls):.2f} |", flush=True)


if __name__ == "__main__":
    main()
