"""Row-sparse training: each step touches only the rows of its batch, so its cost never grows with the tables.

The lesson's path (dense AdamW) updates every row of every table on every step:
right for 100K ratings, ruinous for 100M. This solver minimises the classic
matrix-factorisation objective with row-wise Adagrad, the gradients written out
by hand and applied to the touched rows only::

    minimise  Σ_(u,i)  (r_ui - μ - b_u - b_i - p_u·q_i)²  +  λ (‖p_u‖² + ‖q_i‖²)  +  λ_b (b_u² + b_i²)

How its regularisation differs from dense AdamW's weight decay:

* **Where**: the penalty is applied to a row each time one of its ratings is
  in a batch, so a row is shrunk in proportion to how often it is rated. Dense
  decoupled decay shrinks every row by ``lr·wd`` on every step, rated or not,
  so rarely rated rows are pulled to zero much harder.
* **Scale**: ``λ`` is per rating (Surprise's ``reg_all`` is the same knob,
  default 0.02), not per step.
* **Step size**: row-wise Adagrad (one accumulator per row), not Adam's
  per-parameter moments; a row's step shrinks as its squared gradients add up.

Two engines minimise it. On the CPU, a compiled loop
(:func:`~collabkit.training.kernels.mf_adagrad_epoch`) takes one rating at a
time, threads sharing the tables without locks (Hogwild); the training rows
are shuffled once, in place (``dls.train``'s rows change order), then visited
in blocks of ``BLOCK`` in a new random block order every epoch, so memory is
read in runs while the order still changes. On other
devices (CUDA), each batch of ``bs`` ratings is one step of :class:`RowAdagrad`
in torch ops, so everything stays on the device. Both reach the same fit
(``tests/test_sparse.py``); with more than one thread the CPU engine is not
bit-for-bit repeatable, because the threads' updates interleave. The torch
engine also runs on the CPU when a run writes or resumes a checkpoint (the
compiled loop has no batch position to save). In several processes a third
engine, :class:`~collabkit.training.sharded.ShardedEngine`, shards the tables
row-wise on TorchRec and takes the torch engine's steps on global batches.

μ is the mean training rating, kept apart during training and folded into the
user biases at the end, so the result is an ordinary ``DotProductBias``
(``y_range=None``) that saves, predicts and recommends like any other.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from collabkit import distributed
from collabkit.errors import ConfigError, ModelFileError, TrainingDivergedError
from collabkit.models import DotProductBias
from collabkit.models.layers import positive_int
from collabkit.training.checkpoint import check_same_data, load_checkpoint, restore_run, run_state, save_checkpoint

if TYPE_CHECKING:
    from collabkit.training.sharded import ShardedEngine

log = logging.getLogger(__name__)

_INITIAL_ACC = 0.1
"""Each row's Adagrad accumulator starts here, so the first steps are at most ``lr / √0.1``."""


class RowAdagrad:
    """Row-wise Adagrad: one accumulated squared gradient per row, updated only for the rows a batch touches.

    A row's gradient is first summed over its ratings in the batch (``torch.unique``
    over the batch, so the work is proportional to the batch, not the table);
    the accumulator grows by the mean of its square; the step is
    ``lr · g / √(accumulator)``. Popular rows, which appear many times per batch,
    therefore take steps of the same scale as rare ones instead of blowing up.
    """

    def __init__(
        self, n_rows: int, lr: float, eps: float = 1e-10, initial: float = _INITIAL_ACC,
        device: torch.device | str = "cpu",
    ) -> None:
        self.state = torch.full((n_rows,), initial, device=device)
        self.lr, self.eps = lr, eps

    def step(self, table: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor], grads: torch.Tensor) -> None:
        """Apply per-rating gradients ``grads`` (``(batch, width)``) to ``table``.

        ``rows`` is ``torch.unique(batch_rows, return_inverse=True)``, computed once
        per batch and shared by the tables indexed by the same rows.
        """
        unique, inverse = rows
        unique = unique.long()
        g = torch.zeros(len(unique), grads.shape[1], dtype=grads.dtype, device=grads.device).index_add_(0, inverse, grads)
        acc = self.state.index_select(0, unique) + g.pow(2).mean(1)
        self.state.index_copy_(0, unique, acc)
        table.index_add_(0, unique, g / (acc.sqrt() + self.eps)[:, None], alpha=-self.lr)


@torch.no_grad()
def sparse_step(
    model: DotProductBias, optimizers: dict[str, RowAdagrad], users: torch.Tensor, items: torch.Tensor,
    ratings: torch.Tensor, mu: float, reg: float, bias_reg: float,
) -> torch.Tensor:
    """One row-sparse step on a batch; returns the batch's errors ``r - r̂``."""
    P, Q = model.u_weight.weight, model.i_weight.weight
    bu, bi = model.u_bias.weight, model.i_bias.weight
    p, q = P.index_select(0, users), Q.index_select(0, items)
    b_u, b_i = bu.index_select(0, users), bi.index_select(0, items)
    err = ratings - (mu + b_u[:, 0] + b_i[:, 0] + (p * q).sum(1))
    e = err[:, None]
    user_rows = torch.unique(users, return_inverse=True)
    item_rows = torch.unique(items, return_inverse=True)
    optimizers["u"].step(P, user_rows, reg * p - e * q)  # gradients of (r - r̂)² / 2 + reg ‖·‖² / 2
    optimizers["i"].step(Q, item_rows, reg * q - e * p)
    optimizers["bu"].step(bu, user_rows, bias_reg * b_u - e)
    optimizers["bi"].step(bi, item_rows, bias_reg * b_i - e)
    return err


BLOCK = 4096
"""Ratings per block of the CPU engine: long enough to read memory in runs, short enough to mix well."""
CALL = 1 << 20
"""Ratings per compiled call of the CPU engine, between which the callbacks hear of progress."""


class _CompiledEngine:
    """The CPU engine: the loader's ratings shuffled once, in place, then compiled calls over blocks of them.

    Shuffling in place changes the order of ``dls.train``'s rows (a shuffled
    loader has no order to keep) and saves a second copy of the ratings.
    """

    def __init__(self, model: DotProductBias, train, lr: float, reg: float, bias_reg: float, seed: int) -> None:
        from collabkit.training import kernels, numba_threads

        self.kernels, self.threads = kernels, numba_threads.threads
        self.x, self.y = train.x.numpy(), train.y.numpy()
        if not (self.x.flags.c_contiguous and self.y.flags.c_contiguous):
            raise ConfigError("the compiled engine needs the loader's x and y contiguous (e.g. x.contiguous())")
        order = torch.randperm(train.n, generator=torch.Generator().manual_seed(seed), dtype=torch.int32).numpy()
        kernels.permute_rows_(self.x, self.y, order)  # the rows' order means nothing; a copy would cost 12 B/rating
        del order
        self.rng = np.random.default_rng(seed)
        self.model = model
        self.P, self.Q = model.u_weight.weight.detach().numpy(), model.i_weight.weight.detach().numpy()
        self.sides = []
        for bias in (model.u_bias.weight, model.i_bias.weight):  # (bias, row accumulator, bias accumulator, -)
            side = np.zeros((bias.shape[0], kernels.SIDE_WIDTH), dtype=np.float32)
            side[:, 0] = bias.detach().numpy()[:, 0]
            side[:, 1:3] = _INITIAL_ACC
            self.sides.append(side)
        self.hyper = (np.float32(lr), np.float32(reg), np.float32(bias_reg))

    def epoch(self, mu: float, bs: int, after_batch) -> tuple[float, int]:
        """One pass over the ratings; ``(sum of squared errors, ratings seen)``.

        The pass is cut into calls of about ``CALL`` ratings; after each,
        ``after_batch(k)`` hears of the loader-sized batches (``bs`` ratings)
        it covered, so a progress bar moves.
        """
        n = len(self.y)
        blocks = self.rng.permutation(-(-n // BLOCK))
        per_call = max(1, CALL // BLOCK)
        sse, reported = 0.0, 0
        with self.threads(torch.get_num_threads()) as threads:
            for first in range(0, len(blocks), per_call):
                sse += self.kernels.mf_adagrad_epoch(
                    self.x, self.y, blocks[first : first + per_call], BLOCK, threads, self.P, self.Q, *self.sides,
                    np.float32(mu), *self.hyper,
                )
                done = min(n, (first + per_call) * BLOCK) // bs
                for k in range(reported, done):
                    after_batch(k)
                reported = done
        with torch.no_grad():  # the biases live in the side tables while training
            for bias, side in zip((self.model.u_bias.weight, self.model.i_bias.weight), self.sides):
                bias.copy_(torch.from_numpy(side[:, :1]))
        return sse, n

    def validate(self, learn, mu: float) -> list[float]:
        return _validate_local(learn, mu)

    def finish(self) -> None:
        """Nothing to do: the compiled loop trains the model's own tables."""


class _TorchEngine:
    """The device engine: each batch of the loader is one :func:`sparse_step`."""

    def __init__(self, model: DotProductBias, train, lr: float, reg: float, bias_reg: float, device) -> None:
        self.model, self.train, self.reg, self.bias_reg = model, train, reg, bias_reg
        n_users, n_items = model.u_weight.num_embeddings, model.i_weight.num_embeddings
        sizes = {"u": n_users, "i": n_items, "bu": n_users, "bi": n_items}
        self.optimizers = {name: RowAdagrad(rows, lr, device=device) for name, rows in sizes.items()}

    def epoch(self, mu: float, bs: int, after_batch) -> tuple[float, int]:
        sse = torch.zeros((), dtype=torch.float64, device=self.train.x.device)
        count = 0
        for k, (xb, yb) in enumerate(self.train):
            err = sparse_step(self.model, self.optimizers, xb[:, 0], xb[:, 1], yb, mu, self.reg, self.bias_reg)
            sse += (err * err).sum()  # stays on the device: no sync per step
            count += len(err)
            after_batch(k)
        return float(sse), count

    def validate(self, learn, mu: float) -> list[float]:
        return _validate_local(learn, mu)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The model's tables and the row accumulators, as a checkpoint stores them."""
        tables = {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}
        return tables, {name: opt.state.clone() for name, opt in self.optimizers.items()}

    def load(self, tables: dict[str, torch.Tensor], accumulators: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, tensor in tables.items():
                self.model.get_parameter(name).copy_(tensor)
        for name, opt in self.optimizers.items():
            opt.state.copy_(accumulators[name])

    def finish(self) -> None:
        """Nothing to do: each step updates the model's own tables."""


def _validate_local(learn, mu: float) -> list[float]:
    """Validate with μ folded into the user biases, then restore the table exactly."""
    model = learn.model
    with torch.no_grad():
        trained_bias = model.u_bias.weight.clone()
        model.u_bias.weight += mu
        valid = learn.validate_or_nan()
        model.u_bias.weight.copy_(trained_bias)
    return valid


@dataclass(frozen=True)
class SparseConfig:
    """The row-sparse solver's settings: :func:`fit_sparse`'s own defaults (``reg`` is λ per rating; a
    :class:`~collabkit.training.recipe.TrainConfig` and the CLI call it ``wd``)."""

    n_factors: int = 64
    epochs: int = 20
    lr: float = 0.05
    reg: float = 0.02
    bs: int = 64

    def __post_init__(self) -> None:
        for name in ("n_factors", "epochs", "bs"):
            positive_int(name, getattr(self, name))
        if not (self.lr > 0 and self.reg >= 0):
            raise ConfigError(f"lr must be > 0 and the L2 penalty (wd) >= 0, got lr={self.lr}, wd={self.reg}")


def fit_sparse(
    learn, epochs: int = 20, lr: float = 0.05, reg: float = 0.02, bias_reg: float | None = None,
    init_std: float = 0.1, seed: int = 0, compiled: bool | None = None, checkpoint: str | Path | None = None,
    resume: dict | None = None,
) -> None:
    """Train ``learn.model`` (a ``DotProductBias`` with ``y_range=None``) with row-wise Adagrad on ``learn.dls``.

    ``compiled`` picks the engine of a single process (see the module's
    docstring): ``None`` takes the compiled one on the CPU and torch's
    elsewhere, and torch's whenever there is a ``checkpoint`` or ``resume``
    (the compiled loop visits blocks, not batches of ``bs``, so it has no
    position to save). The CPU engine uses ``torch.get_num_threads()``
    threads. In a multi-process run the tables are sharded over the ranks on
    TorchRec (:mod:`~collabkit.training.sharded`), with the same global batches
    as torch's engine. After every epoch the recorder gets
    ``[train_mse, valid_mse, *metrics]`` and the learner's callbacks see the
    epoch; with ``checkpoint``, rank 0 then writes the whole state there
    (:func:`sparse_state`). ``resume`` is such a state (``load_checkpoint(path, "sparse")``),
    from any number of processes with the same ``bs``.
    """
    model = learn.model
    if not isinstance(model, DotProductBias) or model.y_range is not None:
        raise TypeError("fit_sparse needs a DotProductBias model with y_range=None")
    bias_reg = reg if bias_reg is None else bias_reg
    train = learn.dls.train
    device = model.u_weight.weight.device
    several = distributed.world_size() > 1
    keeps_position = checkpoint is not None or resume is not None
    if compiled is None:
        compiled = device.type == "cpu" and not several and not keeps_position
        if device.type == "cpu" and not several and keeps_position:
            log.warning("checkpoints: the sparse solver trains with torch's ops, not its compiled loop (which has "
                        "no batch position to save), and that is many times slower; drop --checkpoint for speed")
    if compiled and (device.type != "cpu" or several or keeps_position):
        raise ConfigError("the compiled engine runs in one CPU process without checkpoints; "
                          f"the model is on {device}, with {distributed.world_size()} process(es)")
    torch.manual_seed(seed)
    with torch.no_grad():
        for table in (model.u_weight.weight, model.i_weight.weight):
            table.normal_(0.0, init_std)
        model.u_bias.weight.zero_()
        model.i_bias.weight.zero_()
    mu = float(train.y.double().mean())
    engine: _CompiledEngine | _TorchEngine | ShardedEngine
    if several:
        from collabkit.training.sharded import ShardedEngine

        engine = ShardedEngine(model, train, lr, reg, bias_reg, eps=_EPS, initial_acc=_INITIAL_ACC)
    elif compiled:
        engine = _CompiledEngine(model, train, lr, reg, bias_reg, seed)
    else:
        engine = _TorchEngine(model, train, lr, reg, bias_reg, device)
    hyper = {"lr": lr, "reg": reg, "bias_reg": bias_reg, "init_std": init_std, "bs": train.bs, "mu": mu}
    first_epoch = 0
    if resume is not None:
        first_epoch = _restore(learn, engine, resume, hyper, epochs)
    rec = learn.recorder
    with learn.fitting(epochs) as callbacks:
        for epoch in range(first_epoch, epochs):
            learn.before_epoch(callbacks, epoch)
            started = time.perf_counter()
            sse, count = engine.epoch(mu, train.bs, lambda k: [cb.after_batch(learn, k) for cb in callbacks])
            train_mse = sse / max(count, 1)
            if not math.isfinite(train_mse):
                raise TrainingDivergedError(f"sparse SGD diverged in epoch {epoch}; lower lr (this run used {lr:g})")
            rec.losses.append(train_mse)
            rec.lrs.append(lr)
            rec.moms.append(0.0)
            valid = engine.validate(learn, mu)
            learn.record_epoch(epoch, [train_mse, *valid], len(rec.losses), time.perf_counter() - started)
            if checkpoint is not None:
                state = sparse_state(learn, engine, epoch + 1, epochs, hyper)  # (a collective in several processes)
                if distributed.is_main():
                    save_checkpoint(checkpoint, state)
            if learn.after_epoch(callbacks, epoch):
                break
    engine.finish()
    with torch.no_grad():
        model.u_bias.weight += mu


_EPS = 1e-10
"""Adagrad's ``eps``, as :class:`RowAdagrad` has it."""
_STATE_KIND = "sparse"


def sparse_state(learn, engine, epochs_done: int, n_epoch: int, hyper: dict) -> dict:
    """A checkpoint of a sparse run: whole tables and accumulators (under the local solver's names), the
    hyperparameters, and what every checkpoint holds (:func:`~collabkit.training.checkpoint.run_state`)."""
    tables, accumulators = engine.state()
    return run_state(learn, _STATE_KIND, epochs_done, n_epoch, hyper=hyper,
                     model={name: t.cpu() for name, t in tables.items()},
                     accumulators={name: a.cpu() for name, a in accumulators.items()})


def _restore(learn, engine, state: dict, hyper: dict, epochs: int) -> int:
    """Load ``state`` into ``engine`` and the learner; the number of epochs already done."""
    check_same_data(state, learn.dls.train)
    saved = state["hyper"]
    differ = [f"{name} {saved[name]} (now {hyper[name]})" for name in ("lr", "reg", "bias_reg", "bs")
              if saved[name] != hyper[name]]
    if differ:
        raise ConfigError(f"the checkpoint was trained with {', '.join(differ)}; resume with the same settings "
                          "(--bs is the global batch, whatever the number of processes)")
    if state["n_epoch"] != epochs:
        raise ConfigError(f"the checkpoint runs {state['n_epoch']} epochs, this run {epochs}; give --epochs "
                          f"{state['n_epoch']}")
    try:
        engine.load(state["model"], state["accumulators"])
    except (KeyError, RuntimeError, IndexError) as exc:
        raise ModelFileError(f"the checkpoint does not fit this model (other data or --n-factors?): {exc}") from exc
    return restore_run(learn, state)


class RowSparseSolver:
    """The solver entry of row-sparse Adagrad (:data:`~collabkit.training.solvers.SOLVERS` ``"sparse"``)."""

    name = "sparse"
    settings_class = SparseConfig
    renamed = {"reg": "wd"}
    resumable = True
    multiprocess = True  # on TorchRec (training/sharded.py)

    def build_model(self, settings: SparseConfig, n_users: int, n_items: int, ratings: np.ndarray) -> DotProductBias:
        return DotProductBias(n_users, n_items, settings.n_factors, y_range=None)

    def learner_options(self, settings: SparseConfig) -> dict[str, Any]:
        return {}

    def fit(self, learn, settings: SparseConfig, seed: int, lr: float | None = None, checkpoint=None) -> None:
        fit_sparse(learn, epochs=settings.epochs, lr=settings.lr if lr is None else lr, reg=settings.reg, seed=seed,
                   checkpoint=checkpoint)

    def resume(self, learn, settings: SparseConfig, seed: int, checkpoint) -> None:
        fit_sparse(learn, epochs=settings.epochs, lr=settings.lr, reg=settings.reg, seed=seed,
                   checkpoint=checkpoint, resume=load_checkpoint(checkpoint, _STATE_KIND))


ROW_SPARSE = RowSparseSolver()
