"""Row-sparse training past one machine: the sparse solver's tables sharded row-wise over the ranks, on TorchRec.

When ``collabkit train --solver sparse`` runs in several processes (``--nproc``
or torchrun), :func:`~collabkit.training.sparse.fit_sparse` trains here. The
four tables of a ``DotProductBias`` live in two TorchRec
``EmbeddingCollection`` s under ``DistributedModelParallel``, each table split
ROW_WISE by the planner: rank r holds a contiguous ~1/N of the user rows and of
the item rows, and their Adagrad state, and nothing else. A batch is routed by
all-to-all to the ranks owning its rows; the gradients travel back the same
way, and fbgemm's fused ``EXACT_ROWWISE_ADAGRAD`` updates each owned row once
per batch, inside the backward pass.

The algorithm is the local solver's (:func:`~collabkit.training.sparse.sparse_step`),
the same objective with the same gradients, not an approximation of it:

* **Global batch**: every rank draws the epoch's permutation from the loader's
  generator (seeded by ``--seed``) and takes its ``bs / N`` slice of each
  batch of ``bs``; a row's gradient is the **sum** over all its ratings in the
  global batch. TorchRec divides embedding gradients by the world size by
  default (to match DDP's mean); the loss is multiplied back by it here.
* **Regularisation** is part of the loss, once per rating
  (``reg/2 ‖p_u‖²`` and ``bias_reg/2 b_u²`` for each rating of u), so autograd
  gives the local solver's per-rating penalty. fbgemm's own ``weight_decay``
  would apply it once per row and batch, so it is left at 0.
* **Table widths**: fbgemm needs widths that are multiples of 4, and one width
  per collection. Factors are padded with zero columns to ``D = 4⌈k/4⌉``, the
  biases live in column 0 of a table of width 4; padded columns get no
  gradient and stay 0. fbgemm's row-wise accumulator adds the *mean* of the
  squared gradient over the row's ``D`` columns, where the local solver
  averages over its ``w`` real ones (``k``, or 1 for a bias). With the
  accumulator started at ``0.1·w/D`` (fbgemm starts it at 0; it is set here),
  a learning rate of ``lr·√(w/D)`` and ``eps·√(w/D)``, every step equals the
  local one; the accumulator read back is multiplied by ``D/w``.

:class:`ShardedTables` owns the sharded module; :meth:`ShardedTables.gather`
brings the tables (and accumulators) back whole from zero-filled full tensors,
each rank filling its own rows, summed over the ranks: simple and order-free.
For a checkpoint the sum is a reduce to rank 0, which writes it; at the end an
all-reduce, so that every rank holds the trained model (the CLI checks that
they agree). Either costs every rank the full tables in memory.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from collabkit import distributed
from collabkit.distributed import DistributedError
from collabkit.models import DotProductBias

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install 'collabkit[distributed]' && pip install --no-deps 'torchrec>=1.8,<1.9' "
                "(on CUDA: pip install torchrec fbgemm-gpu)")

FACTORS = ("user_factors", "item_factors")
BIASES = ("user_bias", "item_bias")
"""Table names (never ``items``: TorchRec keeps tables in an ``nn.ModuleDict``, whose methods they would shadow)."""
BIAS_WIDTH = 4


class TorchRecMissingError(DistributedError, ImportError):
    """The sparse solver was asked for several processes and TorchRec is not installed."""


def require_torchrec() -> None:
    """Raise :class:`TorchRecMissingError`, with the command that installs it, unless TorchRec imports."""
    try:
        import fbgemm_gpu  # noqa: F401
        import torchrec  # noqa: F401
    except (ImportError, OSError) as exc:
        raise TorchRecMissingError(
            f"--solver sparse on several processes trains on TorchRec, which is not importable ({exc}); "
            f"install it with {INSTALL_HINT}"
        ) from exc


def padded_width(n_factors: int) -> int:
    """The factor tables' width in fbgemm: ``n_factors`` rounded up to a multiple of 4."""
    return 4 * math.ceil(n_factors / 4)


@dataclass(frozen=True)
class _Table:
    """One sharded table: its name, rows, fbgemm width ``width`` and the columns in use ``used``."""

    name: str
    rows: int
    width: int
    used: int

    @property
    def scale(self) -> float:
        """``used / width``: fbgemm's accumulator is the local solver's times this."""
        return self.used / self.width


class _Tables(nn.Module):
    """The two collections (factors, biases) and the lookup of a batch of (user, item) rows."""

    def __init__(self, tables: list[_Table], device: torch.device) -> None:
        from torchrec import EmbeddingCollection, EmbeddingConfig

        super().__init__()

        def collection(names: tuple[str, ...]) -> nn.Module:
            configs = [EmbeddingConfig(name=t.name, embedding_dim=t.width, num_embeddings=t.rows, feature_names=[t.name])
                       for t in tables if t.name in names]
            return EmbeddingCollection(tables=configs, device=device)

        self.factors = collection(FACTORS)
        self.biases = collection(BIASES)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(p, q, b_u, b_i)`` rows for the batch, padded columns included (one id per rating)."""
        from torchrec import KeyedJaggedTensor

        values = torch.cat([users, items]).long()
        lengths = torch.ones(len(values), dtype=torch.int32, device=values.device)
        f = self.factors(KeyedJaggedTensor.from_lengths_sync(keys=list(FACTORS), values=values, lengths=lengths))
        b = self.biases(KeyedJaggedTensor.from_lengths_sync(keys=list(BIASES), values=values, lengths=lengths))
        return tuple(out[name].values() for out, names in ((f, FACTORS), (b, BIASES)) for name in names)


class ShardedTables:
    """A ``DotProductBias``'s tables sharded row-wise over the process group, trained by fused row-wise Adagrad.

    Built from (and initialised with) ``model``, whose tables every rank holds
    whole at the start (the CLI builds the model on every rank).
    """

    def __init__(self, model: DotProductBias, lr: float, eps: float, initial_acc: float) -> None:
        require_torchrec()
        from torchrec.distributed import DistributedModelParallel
        from torchrec.distributed.embedding import EmbeddingCollectionSharder
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
        from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
        from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
        from torchrec.distributed.types import ShardingType
        from torchrec.optim import RowWiseAdagrad
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

        n_users, n_items = model.u_weight.num_embeddings, model.i_weight.num_embeddings
        k = model.u_weight.embedding_dim
        self.n_factors, width = k, padded_width(k)
        self.tables = {t.name: t for t in (
            _Table("user_factors", n_users, width, k), _Table("item_factors", n_items, width, k),
            _Table("user_bias", n_users, BIAS_WIDTH, 1), _Table("item_bias", n_items, BIAS_WIDTH, 1),
        )}
        self.device = model.u_weight.weight.device
        self.world = distributed.world_size()
        module = _Tables(list(self.tables.values()), torch.device("meta"))
        for name, param in module.named_parameters():
            table = self.tables[name.split(".")[-2]]
            step = math.sqrt(table.scale)
            apply_optimizer_in_backward(RowWiseAdagrad, [param], {"lr": lr * step, "eps": eps * step})
        sharder = EmbeddingCollectionSharder()
        topology = TopologyFactory.create_topology(
            TrainerConfig(world_size=self.world, local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", self.world))),
            kernel_config=KernelConfig(compute_device=self.device.type),
        )
        constraints = {name: ParameterConstraints(sharding_types=[ShardingType.ROW_WISE.value]) for name in self.tables}
        planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints,
                                           storage_reservation=FixedPercentageStorageReservation(0.15))
        self.plan = planner.collective_plan(module, [sharder], torch.distributed.group.WORLD)
        self.module = DistributedModelParallel(module, device=self.device, plan=self.plan, sharders=[sharder],
                                               init_data_parallel=False)
        from torchrec.distributed.comm_ops import get_gradient_division

        self.grad_scale = float(self.world) if get_gradient_division() else 1.0
        self._set_local(_full_tables(model), {name: torch.full((t.rows,), initial_acc) for name, t in self.tables.items()})
        log.info("row-wise sharding over %d ranks: %s", self.world,
                 ", ".join(f"rank {r} {b / 2**20:.1f} MiB" for r, b in enumerate(self.bytes_per_rank())))

    # --- the rows this rank owns ------------------------------------------------
    def _local(self) -> dict[str, tuple[list, list]]:
        """``{table: (weight shards, accumulator shards)}`` of this rank: views into fbgemm's own storage."""
        weights = self.module.state_dict()
        state = self.module.fused_optimizer.state_dict()["state"]
        out = {}
        for name in self.tables:
            key = next(k for k in weights if k.endswith(f".{name}.weight"))
            acc = state[key][f"{name}.momentum1"]
            out[name] = (weights[key].local_shards(), acc.local_shards())
        return out

    def _set_local(self, tables: dict[str, torch.Tensor], accumulators: dict[str, torch.Tensor]) -> None:
        """Copy this rank's rows of full ``tables`` (unpadded) and local-solver ``accumulators`` into the shards."""
        with torch.no_grad():
            for name, (weights, accs) in self._local().items():
                table = self.tables[name]
                for shard in weights:
                    lo, n = shard.metadata.shard_offsets[0], shard.metadata.shard_sizes[0]
                    shard.tensor.zero_()
                    shard.tensor[:, : table.used].copy_(tables[name][lo : lo + n])
                for shard in accs:
                    lo, n = shard.metadata.shard_offsets[0], shard.metadata.shard_sizes[0]
                    shard.tensor.copy_(accumulators[name][lo : lo + n] * table.scale)

    def gather(self, everyone: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The whole tables (unpadded) and local-solver accumulators: on every rank (an all-reduce of each), or
        with ``everyone=False`` on rank 0 only (a reduce; the other ranks get partial tables)."""
        combine = distributed.all_reduce_sum if everyone else _reduce_to_main
        tables, accumulators = {}, {}
        for name, (weights, accs) in self._local().items():
            table = self.tables[name]
            full = torch.zeros(table.rows, table.used, device=self.device)
            acc = torch.zeros(table.rows, device=self.device)
            for shard in weights:
                lo, n = shard.metadata.shard_offsets[0], shard.metadata.shard_sizes[0]
                full[lo : lo + n] = shard.tensor[:, : table.used]
            for shard in accs:
                lo, n = shard.metadata.shard_offsets[0], shard.metadata.shard_sizes[0]
                acc[lo : lo + n] = shard.tensor / table.scale
            tables[name], accumulators[name] = combine(full), combine(acc)
        return tables, accumulators

    def bytes_per_rank(self) -> list[int]:
        """Bytes of table rows and Adagrad state each rank holds, read from the sharding plan (float32)."""
        held = [0] * self.world
        for module_plan in self.plan.plan.values():
            for parameter in module_plan.values():
                for shard in parameter.sharding_spec.shards:
                    rows, width = shard.shard_sizes
                    held[shard.placement.rank()] += 4 * rows * (width + 1)
        return held

    # --- training and prediction -----------------------------------------------------
    def predict_parts(self, users: torch.Tensor, items: torch.Tensor, mu: float):
        """The looked-up rows (unpadded) and ``μ + b_u + b_i + p·q`` for this rank's part of a batch."""
        p, q, b_u, b_i = self.module(users, items)
        k = self.n_factors
        p, q, b_u, b_i = p[:, :k], q[:, :k], b_u[:, 0], b_i[:, 0]
        return (p, q, b_u, b_i), mu + b_u + b_i + (p * q).sum(1)

    def step(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, mu: float, reg: float,
             bias_reg: float) -> torch.Tensor:
        """One step on this rank's part of a global batch (the update happens in backward); its errors ``r - r̂``."""
        (p, q, b_u, b_i), pred = self.predict_parts(users, items, mu)
        err = ratings - pred
        loss = 0.5 * (err.pow(2).sum() + reg * (p.pow(2).sum() + q.pow(2).sum())
                      + bias_reg * (b_u.pow(2).sum() + b_i.pow(2).sum()))
        (loss * self.grad_scale).backward()
        return err.detach()

    @torch.no_grad()
    def predict(self, users: torch.Tensor, items: torch.Tensor, mu: float) -> torch.Tensor:
        return self.predict_parts(users, items, mu)[1]


def _reduce_to_main(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks, on rank 0 (in place; other ranks keep partial sums)."""
    if distributed.world_size() > 1:
        torch.distributed.reduce(values, dst=0, op=torch.distributed.ReduceOp.SUM)
    return values


MODEL_NAMES = {"user_factors": "u_weight.weight", "item_factors": "i_weight.weight", "user_bias": "u_bias.weight",
               "item_bias": "i_bias.weight"}
"""The sharded tables under ``DotProductBias``'s parameter names."""


def _full_tables(model: DotProductBias) -> dict[str, torch.Tensor]:
    return {name: model.get_parameter(param).detach() for name, param in MODEL_NAMES.items()}


LOCAL_NAMES = {"user_factors": "u", "item_factors": "i", "user_bias": "bu", "item_bias": "bi"}
"""The sharded tables under the names of the local solver's optimizers (``RowAdagrad`` per table)."""


class ShardedEngine:
    """The sparse solver's engine in a multi-process run: :class:`ShardedTables` fed by the sharded loader."""

    def __init__(self, model: DotProductBias, train, lr: float, reg: float, bias_reg: float, eps: float,
                 initial_acc: float) -> None:
        self.model, self.train, self.reg, self.bias_reg = model, train, reg, bias_reg
        self.tables = ShardedTables(model, lr, eps, initial_acc)
        train.shard(distributed.rank(), distributed.world_size())

    def epoch(self, mu: float, bs: int, after_batch) -> tuple[float, int]:
        """One pass of global batches; the sum of squared errors and the count, over all ranks."""
        sse = torch.zeros((), dtype=torch.float64, device=self.train.x.device)
        count = 0
        for k, (xb, yb) in enumerate(self.train):
            err = self.tables.step(xb[:, 0], xb[:, 1], yb, mu, self.reg, self.bias_reg)
            sse += (err.double() ** 2).sum()
            count += len(err)
            after_batch(k)
        sums = distributed.all_reduce_sum(torch.stack([sse, torch.tensor(float(count), dtype=torch.float64,
                                                                          device=sse.device)]))
        return float(sums[0]), int(sums[1])

    def validate(self, learn, mu: float) -> list[float]:
        """The validation metrics from this rank's share of the rows, predicted through the sharded tables and
        reduced as sums (:meth:`~collabkit.training.Learner.reduce_metrics`)."""
        if not learn.dls.valid.n:
            return [float("nan")] * (1 + len(learn.metrics))
        valid = learn.dls.valid
        lo, hi = distributed.row_range(valid.n)  # this rank's contiguous share
        x, y = valid.x[lo:hi], valid.y[lo:hi]
        # every rank must make the same number of lookups (each is a collective): as many as the largest share needs
        largest = -(-learn.dls.valid.n // self.tables.world)
        n_parts = max(1, -(-largest // max(learn.dls.valid.bs, 8192)))
        preds = [self.tables.predict(xb[:, 0], xb[:, 1], mu) for xb in torch.tensor_split(x, n_parts)]
        return learn.reduce_metrics(torch.cat(preds), y)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The whole tables and accumulators under the local solver's names, on rank 0 (the one that writes them;
        a collective: every rank calls it)."""
        tables, accs = self.tables.gather(everyone=False)
        return _as_model_tables(tables), {LOCAL_NAMES[name]: acc for name, acc in accs.items()}

    def load(self, tables: dict[str, torch.Tensor], accumulators: dict[str, torch.Tensor]) -> None:
        """Take this rank's rows of a checkpoint's whole tables and accumulators."""
        by_name = {name: tables[param] for name, param in MODEL_NAMES.items()}
        self.tables._set_local(by_name, {name: accumulators[local] for name, local in LOCAL_NAMES.items()})

    def finish(self) -> None:
        """Copy the gathered tables into the model (on every rank)."""
        tables, _ = self.tables.gather()
        with torch.no_grad():
            for name, tensor in _as_model_tables(tables).items():
                self.model.get_parameter(name).copy_(tensor)


def _as_model_tables(tables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The sharded tables under ``DotProductBias``'s parameter names."""
    return {param: tables[name] for name, param in MODEL_NAMES.items()}
