"""Benchmark: gloo all-reduce bandwidth between local processes (for docs/distributed.md).

    torchrun --standalone --nproc-per-node 2 bench/allreduce.py
"""

import time

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for megabytes in (1, 10, 100):
        tensor = torch.ones(megabytes * 1024 * 1024 // 4)
        dist.all_reduce(tensor)
        dist.barrier()
        started = time.perf_counter()
        for _ in range(5):
            dist.all_reduce(tensor)
        seconds = (time.perf_counter() - started) / 5
        if rank == 0:
            print(f"{megabytes} MB all_reduce: {seconds * 1e3:.1f} ms ({megabytes / seconds:.0f} MB/s)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
