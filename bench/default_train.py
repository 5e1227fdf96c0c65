"""Benchmark: the default ``collabkit train`` on MovieLens 100K, from data load to final metrics.

Runs the command itself (``collabkit train --data ml-100k``: the random 80/20
split, seed 42, the default preset) and reads the "s in all" it prints, which
counts loading, splitting, building the loaders, the fit and the final
predictions, not Python start-up and imports. It then times, in fresh
processes, the part of that which is numba's import and the loading of the
Gibbs sampler's cached machine code. ``--sweeps`` adds rows with a
shorter or longer Gibbs chain (burn-in and thinning as in the preset).

    python bench/default_train.py [--data-dir ../shared/data] [--runs 3] [--sweeps 60 100]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path


def run(data_dir: str, extra: list[str]) -> tuple[float, float]:
    command = [sys.executable, "-m", "collabkit.cli", "train", "--data", "ml-100k", "--data-dir", data_dir,
               "--no-progress", "--show", "0", *extra]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.search(r"valid RMSE ([0-9.]+) .*\(([0-9.]+) s in all\)", out)
    if found is None:
        raise SystemExit(f"unexpected output from {' '.join(command)}:\n{out}")
    return float(found.group(1)), float(found.group(2))


STARTUP = """
import time
import numpy as np
started = time.perf_counter()
from collabkit.training import bayes_kernels
rows = np.zeros(1, np.int32)
bayes_kernels.add_predictions(rows, rows, np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1))
print(time.perf_counter() - started)
"""


def compiled_startup() -> float | None:
    """Seconds a fresh process spends importing numba and loading the sampler's cached machine code
    (``None`` for a collabkit without the compiled sampler, e.g. an older commit on ``PYTHONPATH``)."""
    done = subprocess.run([sys.executable, "-c", "import torch, pandas\n" + STARTUP], capture_output=True, text=True)
    return float(done.stdout.split()[-1]) if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sweeps", type=int, nargs="*", default=[], help="also time these chain lengths")
    args = parser.parse_args()
    print("| preset | valid RMSE | data to metrics (median s) | runs (s) |")
    print("|---|---:|---:|---|")
    for sweeps in [None, *args.sweeps]:
        extra = [] if sweeps is None else ["--sweeps", str(sweeps)]
        results = [run(args.data_dir, extra) for _ in range(args.runs)]
        label = "default" if sweeps is None else f"default, --sweeps {sweeps}"
        times = [t for _, t in results]
        print(f"| {label} | {results[0][0]:.4f} | {statistics.median(times):.1f} | {', '.join(map(str, times))} |",
              flush=True)
    startups = [compiled_startup() for _ in range(args.runs)]
    if None in startups:
        return
    print(f"\nof which, once per process, numba's import and the sampler's cached code: "
          f"{statistics.median(startups):.2f} s (median of {args.runs}; {', '.join(f'{t:.2f}' for t in startups)})")


if __name__ == "__main__":
    main()
