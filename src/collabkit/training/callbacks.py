"""Hooks into the training loop: the progress display, and stopping early with the best epoch's weights."""

from __future__ import annotations

import copy
import logging
import math
import sys
from typing import TYPE_CHECKING, TextIO

from tqdm.auto import tqdm

from collabkit.errors import ConfigError

if TYPE_CHECKING:
    from collabkit.training.learner import Learner

log = logging.getLogger(__name__)


class CancelFitException(Exception):
    """Raised by a callback's ``after_epoch`` to end the fit after this epoch (fastai's name).

    The learner finishes the epoch (every callback's ``after_epoch`` runs),
    then stops, and ``after_fit`` runs as after any fit.
    """


class Callback:
    """Override any of these; the learner calls them in order at the named points."""

    def before_fit(self, learn: Learner, n_epoch: int) -> None:
        pass

    def before_epoch(self, learn: Learner, epoch: int) -> None:
        pass

    def after_batch(self, learn: Learner, batch: int) -> None:
        pass

    def after_epoch(self, learn: Learner, epoch: int) -> None:
        pass

    def after_fit(self, learn: Learner) -> None:
        pass


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


class ProgressCallback(Callback):
    """A progress bar over each epoch's batches and fastai's epoch table.

    The table (``epoch  train_loss  valid_loss  <metrics>  time``) is written
    to ``stream`` one row per epoch; the bar goes to stderr and hides itself
    when stderr is not a terminal.
    """

    def __init__(self, stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.stream = stream
        self.bar_enabled = bar
        self._bar = None

    def _write(self, text: str) -> None:
        tqdm.write(text, file=self.stream or sys.stdout)

    def before_fit(self, learn: Learner, n_epoch: int) -> None:
        names = ["epoch", *learn.recorder.metric_names, "time"]
        self._widths = [max(len(n), 10) for n in names]
        self._write("  ".join(n.ljust(w) for n, w in zip(names, self._widths)))

    def before_epoch(self, learn: Learner, epoch: int) -> None:
        disable = None if self.bar_enabled is None else not self.bar_enabled
        self._bar = tqdm(total=len(learn.dls.train), leave=False, disable=disable, desc=f"epoch {epoch}")

    def after_batch(self, learn: Learner, batch: int) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def after_epoch(self, learn: Learner, epoch: int) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        seconds = learn.recorder.times[-1]
        cells = [epoch, *learn.recorder.values[-1], f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"]
        self._write("  ".join(_format(c).ljust(w) for c, w in zip(cells, self._widths)))

    def after_fit(self, learn: Learner) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _Monitor(Callback):
    """Watches one column of the epoch table (``valid_loss`` or a metric's name); lower is better
    unless ``higher_is_better``. Remembers the best value, and the epoch it came in."""

    def __init__(self, monitor: str = "valid_loss", min_delta: float = 0.0, higher_is_better: bool = False) -> None:
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ConfigError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.min_delta, self.sign = monitor, min_delta, -1.0 if higher_is_better else 1.0

    def before_fit(self, learn: Learner, n_epoch: int) -> None:
        from collabkit import distributed

        names = learn.recorder.metric_names
        if self.monitor not in names:
            raise ConfigError(f"{type(self).__name__} watches {self.monitor!r}, which this fit does not record; "
                             f"choose one of {names}")
        if not learn.dls.valid.n and self.monitor != "train_loss":
            raise ConfigError(f"{type(self).__name__} watches {self.monitor!r}, but there is no validation split: "
                             "give the data a validation share")
        if distributed.world_size() > 1:
            raise ConfigError(f"{type(self).__name__} runs in one process; train without --nproc/torchrun")
        self.best: float = math.inf
        self.best_epoch: int | None = None

    def improved(self, learn: Learner, epoch: int) -> bool:
        """Whether this epoch beat the best so far by more than ``min_delta`` (and remember it if so)."""
        value = self.sign * learn.recorder.values[-1][learn.recorder.metric_names.index(self.monitor)]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            return True
        return False


class EarlyStoppingCallback(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs in a row.

    As fastai's callback of that name: it only stops; add :class:`SaveModelCallback`
    to end with the best epoch's weights instead of the last epoch's.
    """

    def __init__(self, monitor: str = "valid_loss", min_delta: float = 0.0, patience: int = 1,
                 higher_is_better: bool = False) -> None:
        super().__init__(monitor, min_delta, higher_is_better)
        if not (isinstance(patience, int) and patience >= 1):
            raise ConfigError(f"patience must be a positive number of epochs, got {patience!r}")
        self.patience = patience
        self.stopped_epoch: int | None = None

    def before_fit(self, learn: Learner, n_epoch: int) -> None:
        super().before_fit(learn, n_epoch)
        self.stopped_epoch = None

    def after_epoch(self, learn: Learner, epoch: int) -> None:
        last_good = -1 if self.best_epoch is None else self.best_epoch  # (None: never a finite value yet)
        if self.improved(learn, epoch) or epoch - last_good < self.patience:
            return
        self.stopped_epoch = epoch
        log.info("early stopping after epoch %d: %s has not improved for %d epoch(s) (best %.6g in epoch %s)",
                 epoch, self.monitor, self.patience, self.sign * self.best, self.best_epoch)
        raise CancelFitException(f"no improvement in {self.monitor} for {self.patience} epoch(s)")


class SaveModelCallback(_Monitor):
    """Keep a copy of the weights of the epoch with the best ``monitor``, and put them back when the fit ends.

    fastai's callback writes them to a file; here the copy is kept in memory
    (collaborative-filtering tables are small next to the machine's memory),
    and ``learn.model`` ends the fit holding the best epoch's weights. The
    optimizer's state is not restored.
    """

    def before_fit(self, learn: Learner, n_epoch: int) -> None:
        super().before_fit(learn, n_epoch)
        self.best_state: dict | None = None

    def after_epoch(self, learn: Learner, epoch: int) -> None:
        if self.improved(learn, epoch):
            self.best_state = copy.deepcopy(learn.model.state_dict())

    def after_fit(self, learn: Learner) -> None:
        if self.best_state is None:
            return
        last = len(learn.recorder.values) - 1
        if self.best_epoch != last:
            log.info("keeping the weights of epoch %d (best %s %.6g), not the last epoch's",
                     self.best_epoch, self.monitor, self.sign * self.best)
        learn.model.load_state_dict(self.best_state)
        self.best_state = None
