"""Multi-process training on ``torch.distributed``: the process group, reductions, and the launcher.

collabkit uses PyTorch's own machinery: ``torchrun`` (``torch.distributed.run``)
starts the workers, ``DistributedDataParallel`` averages the sgd solver's
gradients, TorchRec shards the sparse solver's tables
(:mod:`collabkit.training.sharded`), gloo carries them on CPU and nccl on GPU.
Nothing here is a cluster of its own.

* :func:`launch` is what ``collabkit train --nproc N`` calls: torchrun with
  ``--standalone`` and ``-m collabkit``, so it is the same as
  ``torchrun --standalone --nproc-per-node N -m collabkit train ...``.
* Inside a worker, :func:`init` joins the group (``WORLD_SIZE`` and friends come
  from torchrun), with a timeout on every collective so that a dead peer ends
  the run with an error instead of a hang.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from collabkit.errors import CollabkitError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120


class DistributedError(CollabkitError, RuntimeError):
    """A worker failed, or the process group could not be formed."""


PEER_LOST = 3
"""The exit status of a worker that stopped only because another rank failed (its connection closed under a
collective): :func:`launch` names the rank that failed first, not this one, and such a worker says nothing."""


class PeerLostError(DistributedError):
    """This rank's collective failed because another rank went away; the cause is that rank's error."""


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc``, raised in a collective of a multi-process run, means another rank is gone."""
    if world_size() == 1:
        return False
    if isinstance(exc, dist.DistBackendError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        words in text for words in ("closed by peer", "reset by peer", "broken pipe", "connection refused"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a plain single process): the one that logs, checkpoints and saves."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def default_backend(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo otherwise."""
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


def init(device: torch.device, backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Join the process group torchrun described in the environment; returns ``(rank, world_size)``."""
    if not dist.is_available():
        raise DistributedError("this build of torch has no torch.distributed")
    if not dist.is_initialized():
        backend = backend or default_backend(device)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_rank(), dist.get_world_size()


def shutdown(wait: bool = True) -> None:
    """Barrier (with ``wait``: every rank reaches here before any exits), then leave the group."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (a no-op in a single process)."""
    if world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_cat(values: torch.Tensor) -> torch.Tensor:
    """Every rank's 1-D tensor, concatenated in rank order (lengths may differ)."""
    if world_size() == 1:
        return values
    sizes = [torch.zeros(1, dtype=torch.long, device=values.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([values.numel()], device=values.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=values.dtype, device=values.device)
    padded[: values.numel()] = values
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def row_range(n: int, of_rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """A rank's contiguous share ``[start, stop)`` of ``n`` rows (default: this rank's, in this process group):
    rank r of W holds rows ``n·r//W`` up to ``n·(r+1)//W`` (all of them in a single process)."""
    r = rank() if of_rank is None else of_rank
    w = world_size() if world is None else world
    return n * r // w, n * (r + 1) // w


def all_gather_rows(n: int, *blocks: torch.Tensor) -> list[torch.Tensor]:
    """Whole tables from every rank's share of their rows, split as :func:`row_range` splits ``n`` rows.

    Each block holds this rank's rows of one table (2-D, or 1-D for one value per row); the blocks
    travel together in one ``all_gather`` (padded to the longest share) and come back as whole tables,
    rows in order. In a single process the blocks are returned as they are.
    """
    world = world_size()
    if world == 1:
        return list(blocks)
    rows = blocks[0].shape[0]
    widths = [math.prod(b.shape[1:]) for b in blocks]  # (a share may have no rows)
    shares = [row_range(n, r, world) for r in range(world)]
    longest = max(stop - start for start, stop in shares)
    packed = blocks[0].new_zeros((longest, sum(widths)))
    packed[:rows] = torch.cat([b.reshape(rows, w) for b, w in zip(blocks, widths)], 1)
    parts = [torch.empty_like(packed) for _ in range(world)]
    dist.all_gather(parts, packed)
    whole = torch.cat([part[: stop - start] for part, (start, stop) in zip(parts, shares)])
    tables = torch.split(whole, widths, 1)
    return [t.reshape(n, *b.shape[1:]).contiguous() for t, b in zip(tables, blocks)]


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run ``collabkit <argv>`` in ``nproc`` worker processes through torchrun; returns the exit status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    args = ["--standalone", "--nproc-per-node", str(nproc), "-m", "collabkit", *argv]
    log.info("torchrun %s", " ".join(args))
    try:
        torchrun(args)
    except ChildFailedError as exc:
        failures = exc.failures
        # the rank to blame: one that did not stop merely because another went away (PEER_LOST), lowest first
        causes = sorted(failures, key=lambda r: (failures[r].exitcode == PEER_LOST, r))
        first = failures[causes[0]] if causes else None
        if first is not None and first.exitcode == PEER_LOST:  # no rank failed on its own: a collective broke
            raise DistributedError("distributed training failed: the ranks lost contact with each other (a "
                                   "collective failed or timed out); run with -v to see each rank's error") from exc
        detail = f"rank {first.local_rank} exited with code {first.exitcode}" if first else "a worker failed"
        raise DistributedError(f"distributed training failed: {detail}; see the worker output above") from exc
    return 0
