"""Hooks into the training loop, and the progress display built on them."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from collabkit.training.learner import Learner


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
