"""The Learner: a model, its data, an optimizer and the training loop.

A training run is :meth:`Learner._run`, top to bottom, inside
:meth:`Learner.fitting` (the thread count, the callbacks' ``before_fit`` and
``after_fit``): set the optimizer's hyper-parameters, build the schedule, then
per epoch one call of the stepper (:mod:`collabkit.training.steppers`: per
batch forward, loss, backward and step, or a fast path that makes the same
updates), and finally validate and record. Callbacks observe; the one thing
they may do is stop the fit after an epoch, by raising :class:`CancelFitException`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from collabkit import distributed
from collabkit import metrics as metric_fns
from collabkit.data.loaders import CollabDataLoaders, IndexBatches
from collabkit.data.ratings import check_y_range
from collabkit.errors import ConfigError, DataError, ModelFileError, TrainingDivergedError
from collabkit.training.callbacks import Callback, CancelFitException, ProgressCallback
from collabkit.training.checkpoint import check_same_data, load_checkpoint, restore_run, run_state, save_checkpoint
from collabkit.training.losses import MSELossFlat
from collabkit.training.lr_find import SUGGESTIONS, LRFinderResult
from collabkit.training.optim import (
    DEFAULT_WD,
    Adam,
    check_wd_mode,
    optimizer_weight_decay,
    split_decay_params,
)
from collabkit.training.recorder import Recorder, Smoother, smooth
from collabkit.training.schedule import FASTAI_MOMS, ScheduleSpec, exponential_range
from collabkit.training.steppers import stepper_for

log = logging.getLogger(__name__)

Metric = Callable[[torch.Tensor, torch.Tensor], float]


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore; ``None`` leaves torch alone."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _metric_name(metric: Metric) -> str:
    return getattr(metric, "__name__", type(metric).__name__)


class Learner:
    """Train ``model`` on ``dls``.

    Args:
        dls: the batches, from :class:`~collabkit.data.CollabDataLoaders`.
        model: an ``nn.Module`` mapping a ``(batch, 2)`` index tensor to ratings.
        loss_func: ``(preds, targs) -> loss``; defaults to :class:`MSELossFlat`.
        opt_func: builds the optimizer, called as ``opt_func(param_groups,
            lr=..., wd=..., decouple_wd=...)``; defaults to fastai-style Adam.
        lr: learning rate used when a fit call gives none (fastai: 1e-3).
        wd: weight decay used when a fit call gives none; ``None`` means 0.01.
        wd_mode: ``"decoupled"``, ``"l2"`` or ``"l2-loss"``; see
            :mod:`collabkit.training.optim`.
        metrics: a metric or list of metrics ``(preds, targs) -> float``, shown
            after the losses in the epoch table (e.g. ``rmse``).
        cbs: extra :class:`Callback` objects.
        moms: the 1cycle momentum (Adam β₁) path.
        wd_bn_bias: also decay batch-norm parameters and ``Linear`` biases.
        progress: show a progress bar and the epoch table.
        n_threads: torch intra-op threads while training; ``None`` leaves
            torch's setting alone.
        fast: train a dot product with biases (collabkit's ``DotProductBias``
            or a class of your own that computes the same) with ``MSELossFlat``
            without autograd: on the CPU with Adam/AdamW, whole runs of steps in
            one compiled loop (:mod:`~collabkit.training.fused`); elsewhere,
            for collabkit's class, gradients written by hand. Same updates
            either way; ``False`` uses autograd throughout.
    """

    def __init__(
        self,
        dls: CollabDataLoaders,
        model: nn.Module,
        loss_func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        opt_func: Callable[..., torch.optim.Optimizer] = Adam,
        lr: float = 1e-3,
        wd: float | None = None,
        wd_mode: str = "decoupled",
        metrics: Metric | Sequence[Metric] | None = None,
        cbs: Sequence[Callback] | None = None,
        moms: Sequence[float] = FASTAI_MOMS,
        wd_bn_bias: bool = False,
        progress: bool = True,
        n_threads: int | None = None,
        fast: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.dls = dls
        self.model = model.to(dls.device)
        self.loss_func = loss_func if loss_func is not None else MSELossFlat()
        self.opt_func = opt_func
        self.lr = lr
        self.wd = wd
        self.wd_mode = check_wd_mode(wd_mode)
        if metrics is None:
            metrics = []
        self.metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
        self.cbs = list(cbs or [])
        self.moms = tuple(moms)
        self.wd_bn_bias = wd_bn_bias
        self.progress = progress
        self.n_threads = n_threads
        self.fast = fast
        self.recorder = Recorder()
        self.opt: torch.optim.Optimizer | None = None
        self._ddp: nn.Module | None = None  # DistributedDataParallel around the model, built on first use

    # --- optimizer ------------------------------------------------------------
    def create_opt(self) -> torch.optim.Optimizer:
        """(Re)build the optimizer: decayed parameters in group 0, the rest in group 1."""
        decay, no_decay = split_decay_params(self.model, self.wd_bn_bias)
        if not decay and not no_decay:
            raise ConfigError("the model has no trainable parameters")
        groups = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay})
        self.opt = self.opt_func(groups, lr=self.lr, wd=0.0, decouple_wd=self.wd_mode == "decoupled")
        return self.opt

    def _set_hypers(self, opt: torch.optim.Optimizer, lr: float, wd: float, mom: float = 0.9) -> None:
        weight_decay = optimizer_weight_decay(wd, self.wd_mode)
        for k, group in enumerate(opt.param_groups):
            group["lr"] = lr
            group["weight_decay"] = weight_decay if k == 0 else 0.0
            if "betas" in group:
                group["betas"] = (mom, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = mom

    def _resolve_wd(self, wd: float | None) -> float:
        wd = self.wd if wd is None else wd
        wd = DEFAULT_WD if wd is None else float(wd)
        if wd < 0 or not math.isfinite(wd):
            raise ConfigError(f"wd (weight decay) must be a finite number >= 0, got {wd}")
        return wd

    # --- training -------------------------------------------------------------
    def fit(
        self, n_epoch: int, lr: float | None = None, wd: float | None = None, cbs=None, checkpoint: str | None = None
    ) -> None:
        """Train ``n_epoch`` epochs at a constant learning rate (see :meth:`fit_one_cycle` for ``checkpoint``)."""
        spec = ScheduleSpec("constant", self.lr if lr is None else lr)
        self._run(n_epoch, spec, self._resolve_wd(wd), cbs, checkpoint)

    def fit_one_cycle(
        self,
        n_epoch: int,
        lr_max: float | None = None,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        wd: float | None = None,
        moms: Sequence[float] | None = None,
        cbs=None,
        checkpoint: str | None = None,
    ) -> None:
        """Train ``n_epoch`` epochs under the 1cycle policy (``torch.optim.lr_scheduler.OneCycleLR``).

        The lr rises by cosine from ``lr_max/div`` to ``lr_max`` over the first
        ``pct_start`` of all batches, then falls by cosine to ``lr_max/div_final``,
        while Adam's β₁ goes 0.95 → 0.85 → 0.95. See :mod:`collabkit.training.schedule`.

        With ``checkpoint=PATH`` the whole state (weights, optimizer, schedule,
        shuffling, history) is written to ``PATH`` after every epoch, atomically;
        :meth:`resume` continues from it.
        """
        moms = self.moms if moms is None else tuple(moms)
        spec = ScheduleSpec("one_cycle", self.lr if lr_max is None else lr_max, div, div_final, pct_start, moms)
        self._run(n_epoch, spec, self._resolve_wd(wd), cbs, checkpoint)

    def resume(self, path: str, cbs=None) -> None:
        """Continue the run saved in checkpoint ``path`` where it stopped, writing further checkpoints there."""
        state = load_checkpoint(path, "sgd")
        self._run(state["n_epoch"], ScheduleSpec(**state["schedule"]), state["wd"], cbs, path, resume=state)

    def _run(
        self,
        n_epoch: int,
        spec: ScheduleSpec,
        wd: float,
        cbs,
        checkpoint: str | None = None,
        resume: dict | None = None,
    ) -> None:
        if not isinstance(n_epoch, int) or n_epoch < 1:
            raise ConfigError(f"n_epoch must be a positive integer, got {n_epoch!r}")
        spec.check()
        train = self.dls.train
        n_batches = self._n_batches()
        check_y_range(train.y.cpu().numpy(), getattr(self.model, "y_range", None))
        opt = self.opt if self.opt is not None else self.create_opt()
        self._set_hypers(opt, spec.lr, wd)
        schedule = spec.build(opt, n_epoch * n_batches)
        first_epoch = 0
        if resume is not None:
            first_epoch = self._restore(resume, opt, schedule)
        penalty = wd if self.wd_mode == "l2-loss" else 0.0
        stepper = stepper_for(self, opt, penalty, self._training_module())
        main_rank = distributed.is_main()
        rec = self.recorder
        with self.fitting(n_epoch, cbs) as callbacks:
            for epoch in range(first_epoch, n_epoch):
                self.before_epoch(callbacks, epoch)
                start = time.perf_counter()
                self.model.train()
                batch_losses = stepper.epoch(train, n_batches, schedule, rec,
                                             lambda k: [cb.after_batch(self, k) for cb in callbacks])
                losses = batch_losses.tolist()
                rec.losses.extend(losses)
                train_loss = float(distributed.all_reduce_sum(batch_losses.sum().reshape(1))[0]) / (
                    n_batches * distributed.world_size()
                )
                if not math.isfinite(train_loss):
                    raise TrainingDivergedError(
                        f"training diverged in epoch {epoch}: the training loss is {train_loss}. "
                        f"Try a lower learning rate (this run used {spec.lr:g}), more weight decay, or a y_range"
                    )
                row = [train_loss, *self.validate_or_nan()]
                self.record_epoch(epoch, row, len(rec.losses), time.perf_counter() - start)
                if main_rank and checkpoint is not None:
                    save_checkpoint(checkpoint, self._state(epoch + 1, n_epoch, spec, wd, opt, schedule))
                if self.after_epoch(callbacks, epoch):
                    break

    # --- what every solver shares: callbacks and the epoch record ----------------
    @contextlib.contextmanager
    def fitting(self, n_epoch: int, cbs=None) -> Iterator[list[Callback]]:
        """The frame of a fit, for every solver: torch's thread count (``n_threads``) and the callbacks,
        ``before_fit`` on entry and ``after_fit`` on the way out, even when the fit fails. Yields the callbacks.
        """
        callbacks = self.fit_callbacks(cbs)
        with num_threads(self.n_threads):
            for cb in callbacks:
                cb.before_fit(self, n_epoch)
            try:
                yield callbacks
            finally:
                for cb in callbacks:
                    cb.after_fit(self)

    def before_epoch(self, callbacks: Sequence[Callback], epoch: int) -> None:
        """Run every callback's ``before_epoch`` (the counterpart of :meth:`after_epoch`, for every solver)."""
        for cb in callbacks:
            cb.before_epoch(self, epoch)

    def after_epoch(self, callbacks: Sequence[Callback], epoch: int) -> bool:
        """Run every callback's ``after_epoch``; whether one of them asked to stop (:class:`CancelFitException`)."""
        cancelled = False
        for cb in callbacks:
            try:
                cb.after_epoch(self, epoch)
            except CancelFitException:
                cancelled = True
        return cancelled

    def fit_callbacks(self, cbs=None) -> list[Callback]:
        """The callbacks of a fit (none on ranks other than 0), with the recorder's columns set."""
        self.recorder.metric_names = ["train_loss", "valid_loss", *map(_metric_name, self.metrics)]
        if not distributed.is_main():
            return []
        return [*self.cbs, *(cbs or []), *([ProgressCallback()] if self.progress else [])]

    def record_epoch(self, epoch: int, row: list[float], iters: int, seconds: float) -> None:
        """Append one epoch's ``[train_loss, valid_loss, *metrics]`` to the recorder (and log it on rank 0)."""
        rec = self.recorder
        rec.values.append(row)
        rec.iters.append(iters)
        rec.times.append(seconds)
        if distributed.is_main():
            log.info("epoch %d: %s", epoch, dict(zip(rec.metric_names, row)))

    def _n_batches(self) -> int:
        """Batches per epoch of the training loader; a loader with none is a :class:`DataError`."""
        train = self.dls.train
        if len(train) == 0:
            raise DataError(f"the training split has {train.n} rows, fewer than one batch (bs={train.bs}); lower bs")
        return len(train)

    def validate_or_nan(self) -> list[float]:
        """:meth:`validate`, or NaNs when there is no validation split."""
        return self.validate() if self.dls.valid.n else [float("nan")] * (1 + len(self.metrics))

    def plain_mse(self, penalty: float) -> bool:
        """Whether this run may skip autograd: ``fast``, ``MSELossFlat`` (mean), no ``l2-loss`` term, one process,
        every parameter trainable. The model itself is checked by :func:`~collabkit.training.steppers.stepper_for`.
        """
        return (
            self.fast
            and isinstance(self.loss_func, MSELossFlat)
            and self.loss_func.reduction == "mean"
            and not penalty
            and distributed.world_size() == 1
            and all(p.requires_grad for p in self.model.parameters())
        )

    def _training_module(self) -> nn.Module:
        """The model, wrapped in ``DistributedDataParallel`` when this process is one of several."""
        if distributed.world_size() == 1:
            return self.model
        if self._ddp is None or self._ddp.module is not self.model:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.dls.device] if self.dls.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=device_ids)
            self.dls.train.shard(distributed.rank(), distributed.world_size())
        return self._ddp

    def _state(self, epochs_done: int, n_epoch: int, spec: ScheduleSpec, wd: float, opt, schedule) -> dict:
        return run_state(self, "sgd", epochs_done, n_epoch, schedule=dataclasses.asdict(spec), wd=wd,
                         wd_mode=self.wd_mode, model=self.model.state_dict(), optimizer=opt.state_dict(),
                         scheduler=schedule.state_dict() if schedule is not None else None)

    def _restore(self, state: dict, opt, schedule) -> int:
        check_same_data(state, self.dls.train)
        if state["wd_mode"] != self.wd_mode:
            raise ConfigError(f"the checkpoint was trained with wd_mode={state['wd_mode']!r}, not {self.wd_mode!r}")
        try:
            self.model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelFileError(f"the checkpoint does not fit this model or optimizer: {exc}") from exc
        if schedule is not None and state["scheduler"] is not None:
            schedule.load_state_dict(state["scheduler"])
        return restore_run(self, state)

    # --- evaluation -------------------------------------------------------------
    def get_preds(self, ds_idx: int = 1, dl: IndexBatches | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and targets, in order, for the validation (``ds_idx=1``) or training (0) split."""
        if dl is None:
            if ds_idx not in (0, 1):
                raise ConfigError(f"ds_idx must be 0 (train) or 1 (valid), got {ds_idx}")
            dl = self.dls.valid if ds_idx == 1 else self.dls.train
        ordered = IndexBatches(dl.x, dl.y, bs=max(dl.bs, 8192))  # unshuffled: never draws from dl's generator
        if dl.sharded:  # this rank's share only (a sharded training loader keeps its rank and world)
            ordered.shard(dl.rank, dl.world)
        self.model.eval()
        preds, targs = [], []
        with torch.no_grad(), num_threads(self.n_threads):
            for xb, yb in ordered:
                preds.append(self.model(xb).reshape(-1))
                targs.append(yb)
        if not preds:
            return torch.empty(0, device=dl.x.device), torch.empty(0, device=dl.x.device)
        return torch.cat(preds), torch.cat(targs)

    def valid_share(self) -> IndexBatches:
        """The validation rows this process predicts in a multi-process run (all of them in one process)."""
        valid = self.dls.valid
        return IndexBatches(valid.x, valid.y, bs=valid.bs).shard(distributed.rank(), distributed.world_size())

    def validate(self) -> list[float]:
        """``[valid_loss, *metrics]`` over the whole validation split.

        In a multi-process run each rank predicts its share of the rows and the
        ranks add up the sums of squared and absolute errors and the counts:
        the MSE loss, ``rmse`` and ``mae`` come from those sums, never from an
        average of per-rank means. Other metrics see all predictions, gathered.
        """
        if distributed.world_size() == 1:
            preds, targs = self.get_preds(ds_idx=1)
            loss = float(self.loss_func(preds, targs))
            return [loss, *(float(m(preds, targs)) for m in self.metrics)]
        return self.reduce_metrics(*self.get_preds(dl=self.valid_share()))

    def reduce_metrics(self, preds: torch.Tensor, targs: torch.Tensor) -> list[float]:
        """``[valid_loss, *metrics]`` over every rank's rows, from this rank's ``preds`` and ``targs``: the sums
        of squared and absolute errors and the counts, added up over the ranks (the multi-process half of
        :meth:`validate`, also called by solvers that predict through tables of their own)."""
        err = (preds.double() - targs.double())
        sums = distributed.all_reduce_sum(torch.stack([(err**2).sum(), err.abs().sum(),
                                                  torch.tensor(float(len(err)), dtype=err.dtype, device=err.device)]))
        sse, sae, n = (float(v) for v in sums)
        by_sums = {metric_fns.rmse: math.sqrt(sse / n), metric_fns.mae: sae / n, metric_fns.mse: sse / n}  # by identity
        out = [sse / n if isinstance(self.loss_func, MSELossFlat) else None]
        for m in self.metrics:
            out.append(by_sums.get(m))
        if any(v is None for v in out):
            gathered = distributed.all_gather_cat(preds), distributed.all_gather_cat(targs)
            out[0] = float(self.loss_func(*gathered)) if out[0] is None else out[0]
            out[1:] = [v if v is not None else float(m(*gathered)) for v, m in zip(out[1:], self.metrics)]
        return out

    def predict(self, rows: Mapping | pd.DataFrame) -> float | np.ndarray:
        """Predicted rating for one row (a dict or Series) or each row of a DataFrame.

        Rows give raw ids under the user and item column names of ``dls``; an id
        the vocabulary does not know raises :class:`~collabkit.errors.UnknownIdError`.
        """
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame([dict(rows)])
        for col in (self.dls.user_name, self.dls.item_name):
            if col not in frame.columns:
                raise DataError(f"predict needs a {col!r} value; got {list(frame.columns)}")
        x = np.stack(
            [self.dls.users.index_strict(frame[self.dls.user_name]), self.dls.items.index_strict(frame[self.dls.item_name])],
            axis=1,
        )
        x = torch.from_numpy(x).to(self.dls.device)
        self.model.eval()
        with torch.no_grad():
            out = self.model(x).reshape(-1).cpu().numpy()
        return float(out[0]) if not isinstance(rows, pd.DataFrame) else out

    # --- learning-rate finder -------------------------------------------------------
    def lr_find(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        stop_div: bool = True,
        show_plot: bool = True,
        suggest_funcs: Sequence[str] = ("valley",),
    ) -> LRFinderResult:
        """Train a few batches with a geometrically growing lr and suggest one.

        The model's weights are restored afterwards. The suggestions skip the
        first 10% and last 5 points of the curve, as fastai does.
        """
        unknown = [name for name in suggest_funcs if name not in SUGGESTIONS]
        if unknown:
            raise ConfigError(f"unknown suggest_funcs {unknown}; choose from {sorted(SUGGESTIONS)}")
        saved = copy.deepcopy(self.model.state_dict())
        saved_opt = self.opt
        opt = self.create_opt()
        self._set_hypers(opt, start_lr, self._resolve_wd(None))
        schedule = exponential_range(opt, start_lr, end_lr, num_it)
        lrs: list[float] = []
        raw: list[float] = []
        best, smoother = math.inf, Smoother()
        self.model.train()
        self._n_batches()  # an empty loader would otherwise be cycled forever
        batches = itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.dls.train)), num_it)
        try:
            with num_threads(self.n_threads):
                for xb, yb in batches:
                    loss = self.loss_func(self.model(xb), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    lrs.append(opt.param_groups[0]["lr"])
                    opt.step()
                    schedule.step()
                    raw.append(loss.item())
                    smoothed = smoother(raw[-1])  # smooth(raw)[-1], kept running
                    if stop_div and (not math.isfinite(smoothed) or smoothed > 4 * best):
                        break
                    best = min(best, smoothed)
        finally:
            self.model.load_state_dict(saved)
            self.opt = saved_opt
        lrs_arr, losses = np.asarray(lrs), smooth(raw)
        keep = slice(num_it // 10, -5) if len(lrs) > num_it // 10 + 10 else slice(None)
        suggestions = {name: SUGGESTIONS[name](lrs_arr[keep], losses[keep]) for name in suggest_funcs}
        result = LRFinderResult(lrs_arr, losses, suggestions)
        log.info("lr_find: %s", result)
        if show_plot:
            result.plot()
        return result
