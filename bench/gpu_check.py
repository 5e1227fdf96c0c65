"""GPU check (prepared, not yet run): the sparse solver's ratings per second on synthetic:100M, CUDA.

Two engines on the same data, batches and hyperparameters (k = 64, global
batch ``--bs``), each timed over ``--epochs`` epochs; the rate is the fastest epoch's, so the first
(which pays for warming up) counts only if it is the only one:

* ``torchrec``: :class:`~collabkit.training.sharded.ShardedEngine` (tables
  sharded ROW_WISE, fused EXACT_ROWWISE_ADAGRAD, nccl), one rank per GPU;
* ``torch``: the single-device torch-ops engine (``fit_sparse(compiled=False)``),
  the baseline a sharded run must beat per GPU; only with ``--nproc-per-node 1``.

For scale: cuMF_SGD (Xie et al. 2016, arXiv:1610.05838; a hand-written CUDA
Hogwild kernel, plain SGD, half-precision tables) reports 3.1-28.2x the speed of
CPU solutions on 1-64 nodes with one Maxwell or Pascal GPU; the Netflix run log
in its repository (uiuc-cumf/cumf_sgd, data/netflix/p_run.out: 99M ratings,
k = 128, 20 epochs in 3.11 s) prints ``update_per_sec: 637100639``, i.e. about
640M ratings/s on one GPU of 2016. TorchRec pays routing and autograd per batch
that such a kernel does not, so expect it well below that per GPU; the
question the check answers is how far below, and how it scales with GPUs.

Install on the GPU machine (the CUDA fbgemm, never together with fbgemm-gpu-cpu)::

    pip install -e . torchrec==1.8.0 fbgemm-gpu==1.8.0   # both built for the installed torch
    torchrun --standalone --nproc-per-node NGPU bench/gpu_check.py [--epochs 2] [--bs 65536] [--budget-s 240]

It stops starting epochs after ``--budget-s`` seconds per engine, so the whole
check stays under 5 minutes (about a minute of it generating the data).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100M")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bs", type=int, default=65536)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=240.0)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a smoke test of this script (e.g. --size 0.2M) where there is no GPU")
    args = parser.parse_args()

    from collabkit import DotProductBias, distributed
    from collabkit.data import IndexBatches
    from collabkit.datasets import synthetic
    from collabkit.training.sharded import ShardedEngine
    from collabkit.training.sparse import _EPS, _INITIAL_ACC, SparseConfig, _TorchEngine

    cuda = args.device == "cuda"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    distributed.init(device, "nccl" if cuda else "gloo")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()
    n = int(float(args.size.rstrip("M")) * 1_000_000)
    n_users, n_items = n // 100, n // 500
    started = time.perf_counter()
    data = synthetic(n, n_users, n_items, rank=16, noise=0.5, seed=0)
    x = torch.from_numpy(np.stack([data.users, data.items], 1)).to(device)
    y = torch.from_numpy(data.ratings).to(device)
    generate_s = time.perf_counter() - started
    mu = float(y.double().mean())
    solver = SparseConfig()  # the solver's defaults: lr 0.05, λ 0.02 (biases too)
    results = []
    for engine_name in ("torchrec", "torch"):
        if engine_name == "torch" and distributed.world_size() > 1:
            break  # (the baseline is one GPU's: run it with --nproc-per-node 1)
        train = IndexBatches(x, y, bs=args.bs, shuffle=True, drop_last=True,
                             generator=torch.Generator(device=device).manual_seed(0))
        model = DotProductBias(n_users, n_items, args.k, y_range=None).to(device)
        with torch.no_grad():
            model.u_weight.weight.normal_(0, 0.1)
            model.i_weight.weight.normal_(0, 0.1)
        if engine_name == "torchrec":
            engine = ShardedEngine(model, train, solver.lr, solver.reg, solver.reg, eps=_EPS, initial_acc=_INITIAL_ACC)
        else:
            engine = _TorchEngine(model, train, solver.lr, solver.reg, solver.reg, device)
        times, mses = [], []
        budget_end = time.perf_counter() + args.budget_s
        for _ in range(args.epochs):
            if time.perf_counter() > budget_end:
                break
            sync()
            t0 = time.perf_counter()
            sse, count = engine.epoch(mu, args.bs, lambda k: None)
            sync()
            times.append(time.perf_counter() - t0)
            mses.append(sse / max(count, 1))
        results.append({"engine": engine_name, "world_size": distributed.world_size() if engine_name == "torchrec" else 1,
                        "ratings": n, "bs": args.bs, "epoch_s": [round(t, 2) for t in times],
                        "ratings_per_s": round(n / min(times)) if times else None, "train_mse": mses,
                        "generate_s": round(generate_s, 1),
                        "gpu": torch.cuda.get_device_name(device) if cuda else None,
                        "peak_gpu_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if cuda else None})
    if distributed.is_main():
        for row in results:
            print(json.dumps(row), flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    main()
