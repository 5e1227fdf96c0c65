"""Benchmark: the Gibbs sampler (``collabkit train --solver bayes``) on 1 and on several processes.

For each process count, runs ``collabkit train --solver bayes`` itself (in
process, through the CLI's ``main``; under torchrun for more than one process,
as ``--nproc`` does) and reports, from rank 0: the validation RMSE of the saved
model, the median seconds of one Gibbs sweep (``gibbs_sweep`` timed, the first
sweep left out) and the mean seconds of a sweep spent in the exchanges (waiting
for the slower rank included), and the bytes each rank exchanged per sweep: the payload of
its ``all_gather`` calls (what it sends, padded to the longest share, and what
it receives), and what its process wrote to the kernel during those calls
(``/proc/self/io``'s ``wchar``: gloo's sockets, the bytes on the wire).

    python bench/distributed_bayes.py --data ml-100k --split u1 [--nproc 1 2] [--sweeps 30] [--data-dir DIR]
    python bench/distributed_bayes.py --data synthetic:10M --sweeps 7

One process uses torch's default thread count (every core); torchrun gives each
of N processes one thread (``OMP_NUM_THREADS=1``), so on a 2-core machine both
rows use both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

MARK = "BENCH "


def _io() -> int:
    """Bytes this process has written through the kernel, sockets included (``wchar``; ``rchar`` misses
    gloo's receives, so what a rank reads is what the others write)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"])


def worker(train_args: list[str]) -> None:
    """One rank: ``collabkit train`` with the sweep timed and the exchanges counted; rank 0 prints a result."""
    from collabkit import distributed
    from collabkit.cli import main
    from collabkit.training import bayes

    sweep_seconds: list[float] = []
    exchanged = {"sent": 0, "received": 0, "wire_sent": 0, "seconds": 0.0, "calls": 0}
    real_sweep, real_gather = bayes.gibbs_sweep, distributed.all_gather_rows

    def timed_sweep(*args, **kwargs):
        started = time.perf_counter()
        out = real_sweep(*args, **kwargs)
        sweep_seconds.append(time.perf_counter() - started)
        return out

    def counted_gather(n, *blocks):
        world = distributed.world_size()
        if world == 1:  # nothing travels
            return real_gather(n, *blocks)
        padded = -(-n // world) * sum(b.reshape(len(b), -1).shape[1] for b in blocks) * blocks[0].element_size()
        wrote, started = _io(), time.perf_counter()
        out = real_gather(n, *blocks)
        exchanged["seconds"] += time.perf_counter() - started
        wrote_after = _io()
        exchanged["sent"] += padded
        exchanged["received"] += padded * (world - 1)
        exchanged["wire_sent"] += wrote_after - wrote
        exchanged["calls"] += 1
        return out

    bayes.gibbs_sweep = timed_sweep
    distributed.all_gather_rows = counted_gather
    model_dir = os.environ["BENCH_MODEL_DIR"]  # (the parent compares the saved models)
    status = main(["train", *train_args, "--no-progress", "--show", "0", "--ranker", "none", "--out", model_dir])
    if status != 0:
        raise SystemExit(status)
    if os.environ.get("RANK", "0") == "0":  # (the process group is gone by now)
        info = json.loads(Path(model_dir, "config.json").read_text())["info"]
        sweeps = len(sweep_seconds)
        print(MARK + json.dumps({
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "valid_rmse": info["valid_rmse"],
            "sweeps": sweeps,
            "sweep_s": statistics.median(sweep_seconds[1:] or sweep_seconds),
            **{k: v / sweeps for k, v in exchanged.items()},
        }), flush=True)


def run(nproc: int, train_args: list[str], model_dir: Path) -> dict:
    here = str(Path(__file__).resolve())
    if nproc == 1:
        command = [sys.executable, here, "--worker", *train_args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                   here, "--worker", *train_args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "BENCH_MODEL_DIR": str(model_dir)})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = next(json.loads(line[len(MARK):]) for line in done.stdout.splitlines() if line.startswith(MARK))
    result["wall_s"] = time.perf_counter() - started
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--split", help="e.g. u1 for ML-100K's first official split (default: the CLI's)")
    parser.add_argument("--sweeps", type=int, help="Gibbs sweeps (default: the CLI's, 30)")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data-dir", default=os.environ.get("COLLABKIT_DATA_DIR"))
    args = parser.parse_args()
    train_args = ["--data", args.data, "--solver", "bayes"]
    train_args += ["--split", args.split] if args.split else []
    train_args += ["--sweeps", str(args.sweeps)] if args.sweeps else []
    train_args += ["--data-dir", args.data_dir] if args.data_dir else []
    print(f"collabkit train {' '.join(train_args)}")
    print("| processes | valid RMSE | Gibbs sweep (median s) | in all_gather (mean s) | "
          "payload sent / received per rank per sweep | written to the sockets per rank per sweep | whole run (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as out:
        models = {}
        for nproc in args.nproc:
            models[nproc] = Path(out, f"nproc{nproc}")
            r = run(nproc, train_args, models[nproc])
            print(f"| {nproc} | {r['valid_rmse']:.4f} | {r['sweep_s']:.3f} | {r['seconds']:.3f} | "
                  f"{r['sent'] / 1e3:,.0f} kB / {r['received'] / 1e3:,.0f} kB | {r['wire_sent'] / 1e3:,.0f} kB "
                  f"| {r['wall_s']:.1f} |", flush=True)
        first, *others = args.nproc
        reference = load_file(models[first] / "model.safetensors")
        for nproc in others:
            weights = load_file(models[nproc] / "model.safetensors")
            largest = max(float((weights[name] - reference[name]).abs().max()) for name in reference)
            print(f"largest weight difference, {nproc} processes against {first}: {largest:.3g}")


if __name__ == "__main__":
    main()
