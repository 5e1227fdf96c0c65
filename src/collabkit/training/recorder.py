"""What a training run leaves behind: per-batch losses and hyper-parameters, per-epoch values, plots."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class Smoother:
    """fastai's smoothed loss, one value at a time: an exponential moving average with bias correction."""

    def __init__(self, beta: float = 0.98) -> None:
        self.beta, self.average, self.count = beta, 0.0, 0

    def __call__(self, value: float) -> float:
        """Take in ``value``; return the smoothed value so far."""
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * float(value)
        return self.average / (1 - self.beta**self.count)


def smooth(values: list[float] | np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Exponential moving average with bias correction (fastai's smoothed loss) of a whole series."""
    smoother = Smoother(beta)
    return np.array([smoother(v) for v in values], dtype=np.float64)


@dataclass
class Recorder:
    """History of the fits of one :class:`~collabkit.training.Learner`.

    Attributes:
        losses: training loss of every batch (the data loss, without any L2 term);
            the row-sparse solver records one per epoch, the Gibbs sampler none.
        lrs, moms: learning rate and Adam β₁ used for every batch (row-sparse: every epoch).
        values: one row per epoch: ``[train_loss, valid_loss, *metrics]`` (Gibbs: per report).
        metric_names: names of the columns of ``values``.
        iters: number of batches seen at the end of each epoch (row-sparse: of losses; Gibbs: sweeps).
        times: seconds each epoch took.
    """

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    moms: list[float] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)
    iters: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def to_dict(self, digits: int = 6) -> dict:
        """A JSON-ready copy (floats rounded to ``digits`` significant digits), for saving with a model."""

        def r(values):
            return [float(f"{v:.{digits}g}") for v in values]

        return {
            "losses": r(self.losses),
            "lrs": r(self.lrs),
            "moms": r(self.moms),
            "values": [r(row) for row in self.values],
            "metric_names": list(self.metric_names),
            "iters": list(self.iters),
            "times": r(self.times),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Recorder:
        names = ("losses", "lrs", "moms", "values", "metric_names", "iters", "times")
        return cls(**{name: list(data.get(name, [])) for name in names})

    @property
    def train_losses(self) -> list[float]:
        return [row[0] for row in self.values]

    @property
    def valid_losses(self) -> list[float]:
        return [row[1] for row in self.values]

    def table(self):
        """The epoch table as a DataFrame (``epoch, train_loss, valid_loss, metrics..., time``)."""
        import pandas as pd

        frame = pd.DataFrame(self.values, columns=self.metric_names)
        frame.insert(0, "epoch", range(len(frame)))
        frame["time"] = self.times
        return frame

    def plot_loss(self, skip_start: int = 5, with_valid: bool = True, ax=None):
        """Training loss per batch (smoothed) and validation loss per epoch: where overfitting shows."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        steps = np.arange(len(self.losses))
        ax.plot(steps[skip_start:], smooth(self.losses)[skip_start:], label="train")
        if with_valid and self.values:
            ax.plot(np.asarray(self.iters) - 1, self.valid_losses, marker="o", label="valid")
        ax.set_xlabel("batch")
        ax.set_ylabel("loss")
        ax.legend()
        return ax

    def plot_sched(self, axes=None):
        """Learning rate and momentum of every batch, side by side."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        axes[0].plot(self.lrs)
        axes[0].set_title("learning rate")
        axes[1].plot(self.moms)
        axes[1].set_title("momentum (Adam β₁)")
        for a in axes:
            a.set_xlabel("batch")
        return axes
