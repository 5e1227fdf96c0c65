"""Loss functions that accept predictions of shape ``(n,)`` or ``(n, 1)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from collabkit.errors import ConfigError


class MSELossFlat:
    """Mean squared error after flattening both inputs (fastai's ``MSELossFlat``).

    The lesson's ``DotProductBias`` returns ``(batch, 1)`` while the targets are
    ``(batch,)``; flattening makes the two line up instead of broadcasting to
    ``(batch, batch)``.
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ConfigError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def __call__(self, preds: torch.Tensor, targs: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(preds.reshape(-1).float(), targs.reshape(-1).float(), reduction=self.reduction)

    def __repr__(self) -> str:
        return f"MSELossFlat(reduction={self.reduction!r})"
