"""Building blocks shared by the models: the lesson's small vocabulary of layers."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from collabkit.errors import ConfigError


class Module(nn.Module):
    """An ``nn.Module`` whose subclasses need not call ``super().__init__()``.

    fastai's ``Module`` lets a lesson write ``self.user_factors = Embedding(...)``
    as the first line of ``__init__``. Here ``__new__`` runs ``nn.Module``'s own
    initialiser before the subclass's ``__init__``, so attributes can be
    assigned straight away. Calling ``super().__init__()`` anyway is harmless.
    """

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        nn.Module.__init__(self)
        return self

    def __init__(self) -> None:
        """Nothing to do: ``__new__`` has already set up the module."""


class Embedding(nn.Embedding):
    """An ``nn.Embedding`` initialised from a truncated normal with std 0.01 (fastai's)."""

    def __init__(self, ni: int, nf: int, std: float = 0.01) -> None:
        super().__init__(ni, nf)
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)


def create_params(size: int | Sequence[int]) -> nn.Parameter:
    """A trainable tensor of shape ``size`` drawn from N(0, 0.01²) (the lesson's ``create_params``)."""
    shape = (size,) if isinstance(size, int) else tuple(size)
    return nn.Parameter(torch.zeros(*shape).normal_(0, 0.01))


def checked_y_range(y_range) -> tuple[float, float] | None:
    """``y_range`` as ``(low, high)`` floats, or ``None``; anything but two finite numbers with low < high is a
    ValueError (a model would otherwise build, and fail or predict nonsense only when used)."""
    if y_range is None:
        return None
    try:
        low, high = (float(v) for v in y_range)
    except (TypeError, ValueError):
        raise ConfigError(f"y_range must be (low, high), two numbers, got {y_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"y_range must be (low, high) with finite low < high, got {y_range!r}")
    return low, high


def positive_int(name: str, value) -> int:
    """``value`` as a positive int (a size, a count); anything else is a ValueError naming it."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_ints(name: str, values) -> list[int]:
    """``values`` as a list of positive ints (layer widths, table sizes); anything else is a ValueError
    naming the first bad value."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise ConfigError(f"{name} must be a list of positive integers, got {values!r}")
    return [positive_int(name, v) for v in list(values)]


def sigmoid_range(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Squash ``x`` into ``(low, high)``: ``sigmoid(x) * (high - low) + low``."""
    return torch.sigmoid(x) * (high - low) + low
