"""Suggest a learning rate from an lr-range test (Leslie Smith's "LR finder").

The learner trains for a few batches while the lr grows geometrically, and
records the smoothed loss. :func:`valley` and :func:`minimum` read a suggestion
off that curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from collabkit.errors import ConfigError


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The lr halfway along the longest stretch over which the loss keeps falling.

    "Keeps falling" is the longest decreasing subsequence of the loss curve:
    for each point, the longest chain of earlier points each with a higher
    loss. The suggestion sits in the middle of that chain's span, where the
    loss is still dropping fast and far from the blow-up at the end.
    """
    n = len(losses)
    if n < 2:
        raise ConfigError("valley needs at least two recorded losses")
    chain = np.ones(n, dtype=int)  # chain[i]: longest decreasing chain ending at i
    start = np.arange(n)  # where that chain starts
    for i in range(1, n):
        higher = np.nonzero(losses[:i] > losses[i])[0]
        if len(higher):
            j = higher[np.argmax(chain[higher])]
            chain[i], start[i] = chain[j] + 1, start[j]
    end = int(np.argmax(chain))
    return float(lrs[(int(start[end]) + end) // 2])


def minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """A tenth of the lr at which the smoothed loss was lowest (the classic rule of thumb)."""
    return float(lrs[int(np.argmin(losses))] / 10)


SUGGESTIONS = {"valley": valley, "minimum": minimum}


@dataclass
class LRFinderResult:
    """The curve of an lr-range test and the suggestions read off it."""

    lrs: np.ndarray
    losses: np.ndarray
    suggestions: dict[str, float] = field(default_factory=dict)

    @property
    def valley(self) -> float:
        return self.suggestions["valley"]

    def __getitem__(self, name: str) -> float:
        return self.suggestions[name]

    def __iter__(self):
        return iter(self.suggestions.values())

    def to_dict(self) -> dict:
        """A JSON-ready copy, for saving with a model."""
        return {"lrs": self.lrs.tolist(), "losses": self.losses.tolist(), "suggestions": dict(self.suggestions)}

    @classmethod
    def from_dict(cls, data: dict) -> LRFinderResult:
        return cls(np.asarray(data["lrs"]), np.asarray(data["losses"]), dict(data["suggestions"]))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.3g}" for k, v in self.suggestions.items())
        return f"SuggestedLRs({inner})"

    def plot(self, ax=None):
        """Loss against lr on a log axis, with each suggestion marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        for name, lr in self.suggestions.items():
            y = float(np.interp(np.log(lr), np.log(self.lrs), self.losses))
            ax.plot([lr], [y], "o", label=f"{name}: {lr:.2e}")
        ax.legend()
        return ax
