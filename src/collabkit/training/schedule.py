"""Learning-rate schedules, built from ``torch.optim.lr_scheduler``.

``fit_one_cycle`` is PyTorch's :class:`~torch.optim.lr_scheduler.OneCycleLR`
with fastai's defaults. The two have the same shape (cosine warm-up, cosine
annealing, momentum moving the other way); they differ only in defaults:

=====================  ==========================  ===========================
                       fastai ``fit_one_cycle``    torch ``OneCycleLR``
=====================  ==========================  ===========================
warm-up share          ``pct_start=0.25``          ``pct_start=0.3``
start lr               ``lr_max / 25``             ``max_lr / 25``
final lr               ``lr_max / 1e5``            ``max_lr / 25 / 1e4``
momentum (β₁)          0.95 → 0.85 → 0.95          0.95 → 0.85 → 0.95
=====================  ==========================  ===========================

fastai's final lr is ``lr_max / div_final``; torch divides the *start* lr by
``final_div_factor``, so fastai's ``div_final=1e5`` is ``final_div_factor =
1e5 / 25 = 4e3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR

from collabkit.errors import ConfigError

FASTAI_MOMS = (0.95, 0.85, 0.95)


@dataclass(frozen=True)
class ScheduleSpec:
    """A learning-rate schedule by name and numbers, so a checkpoint can rebuild it.

    ``kind`` is ``"constant"`` (``lr`` throughout) or ``"one_cycle"`` (see :func:`one_cycle`).
    """

    kind: str
    lr: float
    div: float = 25.0
    div_final: float = 1e5
    pct_start: float = 0.25
    moms: tuple[float, ...] = FASTAI_MOMS

    def check(self) -> None:
        if self.kind not in ("constant", "one_cycle"):
            raise ConfigError(f"schedule kind must be 'constant' or 'one_cycle', got {self.kind!r}")
        if not (self.lr > 0 and self.lr < float("inf")):
            raise ConfigError(f"the learning rate must be a finite number > 0, got {self.lr}")

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> OneCycleLR | None:
        """The scheduler over ``total_steps`` batches, or ``None`` for a constant lr."""
        if self.kind == "constant":
            return None
        return one_cycle(optimizer, self.lr, total_steps, self.div, self.div_final, self.pct_start, tuple(self.moms))


def one_cycle(
    optimizer: torch.optim.Optimizer,
    lr_max: float,
    total_steps: int,
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    moms: Sequence[float] = FASTAI_MOMS,
) -> OneCycleLR:
    """A ``OneCycleLR`` over ``total_steps`` batches with fastai's parameterisation.

    The lr rises by cosine from ``lr_max / div`` to ``lr_max`` over the first
    ``pct_start`` of the steps, then falls by cosine to ``lr_max / div_final``;
    Adam's β₁ moves ``moms[0] → moms[1] → moms[2]``. Runs too short for a
    warm-up of two steps (fewer than ``2 / pct_start``) get exactly two.
    """
    if total_steps < 1:
        raise ConfigError(f"one_cycle needs at least one step, got total_steps={total_steps}")
    if not 0.0 < pct_start < 1.0:
        raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}")
    if len(moms) != 3 or moms[0] != moms[2]:
        raise ConfigError(
            f"moms must be (high, low, high) with the same first and last value, as OneCycleLR "
            f"returns to its max momentum; got {tuple(moms)}"
        )
    if div <= 0 or div_final <= 0:
        raise ConfigError(f"div and div_final must be positive, got div={div}, div_final={div_final}")
    if total_steps >= 3 and pct_start * total_steps < 2:
        # OneCycleLR divides by the warm-up's length in steps minus one: a warm-up of exactly one step
        # (e.g. 4 steps at 0.25) is a ZeroDivisionError, and a shorter one is no warm-up. Very short
        # runs get two warm-up steps instead.
        pct_start = 2 / total_steps
    return OneCycleLR(
        optimizer,
        max_lr=lr_max,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=moms[1],
        max_momentum=moms[0],
        div_factor=div,
        final_div_factor=div_final / div,
    )


def exponential_range(optimizer: torch.optim.Optimizer, start_lr: float, end_lr: float, num_it: int) -> LambdaLR:
    """lr going geometrically from ``start_lr`` (step 0) to ``end_lr`` (step ``num_it - 1``); for ``lr_find``."""
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr_find needs 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_it < 2:
        raise ConfigError(f"lr_find needs num_it >= 2, got {num_it}")
    for group in optimizer.param_groups:
        group["lr"] = start_lr
        group["initial_lr"] = start_lr
    ratio = end_lr / start_lr
    return LambdaLR(optimizer, lambda step: ratio ** (step / (num_it - 1)))
