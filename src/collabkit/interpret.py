"""What a trained model has learned: item biases, the main axes of taste, and training plots.

The lesson's next chapter, as functions over a :class:`~collabkit.recommend.Recommender`:

* :func:`item_bias_table`: items ranked by learned bias. A high bias means
  people rate the item well even when it does not match their taste.
* :func:`item_pca`: a PCA of the item factors; the items at each end of a
  component show what that axis of taste means.
* ``plot_*``: PNG files written with matplotlib's Agg canvas, so no display is
  needed: the PCA map, training curves, the 1cycle schedule, the lr finder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from collabkit.errors import ConfigError, DataError
from collabkit.models import DotProductBias
from collabkit.recommend import Recommender
from collabkit.training.lr_find import LRFinderResult
from collabkit.training.recorder import Recorder

FIGSIZE = (8.0, 5.0)
DPI = 100
"""Every PNG is ``FIGSIZE * DPI`` pixels: 800 x 500."""


def item_bias_table(rec: Recommender, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` trained items with the lowest and the highest learned bias, as two tables."""
    if not isinstance(rec.model, DotProductBias):
        raise DataError(f"a {type(rec.model).__name__} has no item biases; train --model dot-bias to see them")
    rows = rec.trained_item_rows
    bias = rec.model.i_bias.weight.detach().cpu().numpy()[rows, 0]
    order = np.argsort(bias, kind="stable")
    tables = []
    for pick in (order[:n], order[::-1][:n]):
        frame = rec.item_table(rows[pick])
        frame["bias"] = bias[pick].astype(np.float64)
        tables.append(frame)
    return tables[0], tables[1]


@dataclass
class FactorPCA:
    """Item factors projected on their principal components."""

    frame: pd.DataFrame  # item, [title,] [ratings,] pc1, pc2, ...
    explained: np.ndarray  # share of variance of each component
    mean: np.ndarray  # (d,) the mean item factor vector the components are centred on
    components: np.ndarray  # (k, d) the principal directions, one row per component

    def project(self, rec: Recommender, items: Sequence[Any]) -> pd.DataFrame:
        """Other trained items (ids or titles) placed on these same components, as rows shaped like
        :attr:`frame`: so someone's own films can be shown on the map of the most-rated ones."""
        return self.place(rec, rec.catalogue.trained_item_rows_of(list(items)))  # (names an unknown or untrained one)

    def place(self, rec: Recommender, rows: np.ndarray) -> pd.DataFrame:
        """The items at ``rows`` on these components: their :meth:`Recommender.item_table` with ``pc1``, ``pc2``, ..."""
        factors = rec.view.item_factors[torch.from_numpy(rows)].double().numpy()
        coords = (factors - self.mean) @ self.components.T
        frame = rec.item_table(rows)
        for c in range(coords.shape[1]):
            frame[f"pc{c + 1}"] = coords[:, c]
        return frame

    def extremes(self, component: int = 1, n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Items at the low and the high end of component ``component`` (1-based)."""
        col = f"pc{component}"
        if col not in self.frame:
            raise ConfigError(f"component must be 1..{len(self.explained)}, got {component}")
        ordered = self.frame.sort_values(col, kind="stable")
        return ordered.head(n).reset_index(drop=True), ordered.tail(n)[::-1].reset_index(drop=True)


def item_pca(rec: Recommender, n_components: int = 3, top: int | None = 1000) -> FactorPCA:
    """PCA of the item factors of the ``top`` most-rated trained items, most-rated first (all trained items
    if ``None`` or if the model has no rating history).

    Components are signed so that each one's largest loading is positive,
    which makes the output the same from run to run of the same model.
    """
    rows = rec.trained_item_rows
    if rec.history is not None:  # most-rated first, so the head of the frame is the best-known items
        rows = rows[np.argsort(-rec.history.item_counts[rows], kind="stable")]
    rows = rows[:top]
    factors = rec.view.item_factors[torch.from_numpy(rows)].double()
    k = min(n_components, factors.shape[1], len(rows))
    if k < 1 or len(rows) < 2:
        raise DataError("a PCA needs at least two trained items")
    _, s, vh = torch.linalg.svd(factors - factors.mean(0), full_matrices=False)
    vh = vh[:k] * torch.sign(vh[:k].gather(1, vh[:k].abs().argmax(1, keepdim=True)))
    variance = (s**2).numpy()
    pca = FactorPCA(pd.DataFrame(), variance[:k] / variance.sum(), factors.mean(0).numpy(), vh.numpy())
    pca.frame = pca.place(rec, rows)
    return pca


def _figure(ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]
    return fig, axes


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    return path


def plot_item_pca(pca: FactorPCA, path: str | Path, n_labels: int = 50) -> Path:
    """Scatter of the first two components; the ``n_labels`` most-rated items are labelled by title."""
    if "pc2" not in pca.frame:
        raise DataError("the PCA map needs at least two components")
    fig, (ax,) = _figure()
    ax.scatter(pca.frame["pc1"], pca.frame["pc2"], s=6, alpha=0.3, color="tab:blue")
    labelled = pca.frame.head(n_labels)  # most-rated first when the model kept its rating history
    names = labelled["title"] if "title" in labelled else labelled["item"].astype(str)
    for x, y, name in zip(labelled["pc1"], labelled["pc2"], names):
        ax.annotate(str(name)[:28], (x, y), fontsize=6)
    ax.set_xlabel(f"pc1 ({pca.explained[0]:.0%} of variance)")
    ax.set_ylabel(f"pc2 ({pca.explained[1]:.0%} of variance)")
    ax.set_title("item factors, first two principal components")
    return _save(fig, path)


def plot_losses(recorder: Recorder, path: str | Path) -> Path:
    """Training loss per batch and validation loss per epoch (where overfitting shows)."""
    fig, (ax,) = _figure()
    recorder.plot_loss(ax=ax)
    ax.set_title("training and validation loss")
    return _save(fig, path)


def plot_schedule(recorder: Recorder, path: str | Path) -> Path:
    """The learning rate and momentum of every batch (the 1cycle schedule)."""
    fig, axes = _figure(ncols=2)
    recorder.plot_sched(axes=axes)
    return _save(fig, path)


def plot_lr_find(result: LRFinderResult, path: str | Path) -> Path:
    """The lr finder's loss curve with its suggestions marked."""
    fig, (ax,) = _figure()
    result.plot(ax=ax)
    ax.set_title("learning-rate finder")
    return _save(fig, path)


def save_plots(rec: Recommender, outdir: str | Path, pca: FactorPCA | None = None) -> list[Path]:
    """Every plot the model's saved information allows, as PNG files in ``outdir`` (``pca``: the
    model's :func:`item_pca`, when the caller already has it)."""
    outdir = Path(outdir)
    written = []
    pca = item_pca(rec) if pca is None else pca
    if len(pca.explained) >= 2:
        written.append(plot_item_pca(pca, outdir / "item_pca.png"))
    if "recorder" in rec.info:
        recorder = Recorder.from_dict(rec.info["recorder"])
        written.append(plot_losses(recorder, outdir / "losses.png"))
        written.append(plot_schedule(recorder, outdir / "schedule.png"))
    if "lr_find" in rec.info:
        written.append(plot_lr_find(LRFinderResult.from_dict(rec.info["lr_find"]), outdir / "lr_find.png"))
    return written
