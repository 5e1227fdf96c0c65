"""Benchmark: the lesson's first fit in a fresh process, as a new user meets it.

Each run starts a new Python process that imports collabkit, loads MovieLens
100K, builds the lesson's ``DotProductBias`` (50 factors, ``y_range=(0, 5.5)``,
bs=64) and times ``learn.fit_one_cycle(5, 5e-3, wd=0.1)``: everything a first
call pays for (building the optimizer, importing and loading the compiled loop)
is inside the fit's time. It also reports the import and data times, and the
median epoch of the same fit, which is the steady state.

Three ways to get there, one row each:

* ``script``: collabkit's own API, the fit straight after the data;
* ``lesson``: the lesson's names (``collabkit.fastai``), straight after;
* ``notebook``: the lesson's names with a pause (``--pause``, 2 s) between
  the data and the fit, as a person takes between notebook cells; the pause
  is not counted anywhere. The lesson's data cell starts loading the compiled
  loop in the background (``training.fused.load_in_background``), so this row
  shows what the notebook's first fit costs.

    python bench/first_fit.py [--data-dir ../shared/data] [--runs 5] [--pause 2]

Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, time
start = time.perf_counter()
import torch
torch.manual_seed(42)
if sys.argv[2] == "script":
    from collabkit import CollabDataLoaders, DotProductBias, Learner
else:
    from collabkit.fastai import CollabDataLoaders, DotProductBias, Learner
from collabkit.datasets import load_ml_100k
imported = time.perf_counter()
data = load_ml_100k(sys.argv[1]).with_titles()
dls = CollabDataLoaders.from_df(data, item_name="title", user_name="user", rating_name="rating", seed=42, bs=64,
                                duplicates="keep")
learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 50, (0, 5.5)), progress=False)
loaded = time.perf_counter()
time.sleep(float(sys.argv[3]))
resumed = time.perf_counter()
learn.fit_one_cycle(5, 5e-3, wd=0.1)
fitted = time.perf_counter()
print(json.dumps({"import": imported - start, "data": loaded - imported, "fit": fitted - resumed,
                  "epochs": learn.recorder.times, "mse": learn.recorder.values[-1][1],
                  "dynamo": "torch._dynamo" in sys.modules}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between the data and the fit (notebook row)")
    args = parser.parse_args()

    print(f"{args.runs} fresh processes per row, medians")
    print("| row | import collabkit s | data + Learner s | first fit_one_cycle(5) s | s/epoch | valid MSE "
          "| torch._dynamo imported |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row, api, pause in (("script", "script", 0.0), ("lesson", "lesson", 0.0), ("notebook", "lesson", args.pause)):
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", CHILD, args.data_dir, api, str(pause)], check=True,
                                 capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))

        def median(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        epoch = statistics.median(t for r in runs for t in r["epochs"])
        print(f"| {row} | {median('import'):.2f} | {median('data'):.2f} | {median('fit'):.2f} | {epoch:.3f} "
              f"| {median('mse'):.4f} | {'yes' if any(r['dynamo'] for r in runs) else 'no'} |")


if __name__ == "__main__":
    main()
