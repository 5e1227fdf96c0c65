"""Benchmark: does ``torch.compile`` pay for itself on the lesson's training? (It did not; see docs/benchmarks.md.)

The lesson's run (ml-100k, 80/20 split seed 42, DotProductBias, bs=64,
``fit_one_cycle(5, 5e-3, wd=0.1)``) three ways, one torch thread:

* ``eager``: autograd and torch's fused AdamW (``Learner(fast=False)``);
* ``torch.compile``: the same, with the model compiled by inductor
  (``torch.compile(model)``; the first epoch includes compiling);
* ``fused``: collabkit's default, the compiled numba loop.

    python bench/compile.py [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from collabkit import CollabDataLoaders, DotProductBias, Learner
from collabkit.datasets import load_ml_100k


def run(data, how: str) -> tuple[float, float, float]:
    torch.manual_seed(42)
    dls = CollabDataLoaders.from_df(data, item_name="title", user_name="user", rating_name="rating", seed=42, bs=64,
                                    duplicates="keep")
    model = DotProductBias(len(dls.users), len(dls.items), 50, (0, 5.5))
    if how == "torch.compile":
        model = torch.compile(model)
    learn = Learner(dls, model, progress=False, fast=how == "fused")
    start = time.perf_counter()
    learn.fit_one_cycle(5, 5e-3, wd=0.1)
    times = learn.recorder.times
    return time.perf_counter() - start, statistics.median(times[1:]), learn.recorder.values[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_ml_100k(args.data_dir).with_titles()
    print("| path | whole fit s (first epoch compiles) | s/epoch after the first (median) | valid MSE |")
    print("|---|---:|---:|---:|")
    for how in ("eager", "torch.compile", "fused"):
        total, epoch, mse = run(data, how)
        print(f"| {how} | {total:.2f} | {epoch:.2f} | {mse:.3f} |", flush=True)


if __name__ == "__main__":
    main()
