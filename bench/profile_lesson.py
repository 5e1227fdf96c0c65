"""Where the lesson's training time goes: cProfile of ``fit_one_cycle(5, 5e-3, wd=0.1)`` on ml-100k, one thread.

Prints the functions with the most time of their own (``tottime``) as a
Markdown table. To profile an older version for a before/after comparison,
run this file with that version's ``src`` first on ``PYTHONPATH``:

    python bench/profile_lesson.py [--data-dir ../shared/data] [--top 8]
    git worktree add /tmp/before <commit> && PYTHONPATH=/tmp/before/src python bench/profile_lesson.py
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
from pathlib import Path

import torch

import collabkit
from collabkit import CollabDataLoaders, DotProductBias, Learner
from collabkit.datasets import load_ml_100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("COLLABKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_ml_100k(args.data_dir).with_titles()
    dls = CollabDataLoaders.from_df(data, item_name="title", user_name="user", rating_name="rating", seed=42, bs=64,
                                    duplicates="keep")
    torch.manual_seed(42)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 50, (0, 5.5)), progress=False)
    learn.fit_one_cycle(1, 5e-3, wd=0.1)  # warm-up: compile or load the compiled loop, first-call costs
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 50, (0, 5.5)), progress=False)
    profiler = cProfile.Profile()
    profiler.enable()
    learn.fit_one_cycle(5, 5e-3, wd=0.1)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    print(f"collabkit from {Path(collabkit.__file__).parent}; fit 5 epochs under cProfile: {total:.2f} s")
    print("| function | calls | own s | share |")
    print("|---|---:|---:|---:|")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[: args.top]
    for (file, line, name), (_, calls, own, _, _) in rows:
        where = f"{Path(file).name}:{line} {name}" if line else name
        print(f"| `{where}` | {calls:,} | {own:.2f} | {100 * own / total:.0f}% |")


if __name__ == "__main__":
    main()
