"""Rating metrics on plain arrays or tensors.

Each metric takes ``(preds, targs)`` of the same length, flattens both and
returns a float. They are computed over the whole validation set at once, never
averaged over batches.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _flat_pair(preds: ArrayLike, targs: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(preds).detach().reshape(-1).double()
    t = torch.as_tensor(targs).detach().reshape(-1).double().to(p.device)
    if p.shape != t.shape:
        raise ValueError(f"preds and targs must have the same number of values, got {p.numel()} and {t.numel()}")
    if p.numel() == 0:
        raise ValueError("cannot compute a metric on zero predictions")
    return p, t


def mse(preds: ArrayLike, targs: ArrayLike) -> float:
    """Mean squared error."""
    p, t = _flat_pair(preds, targs)
    return float(((p - t) ** 2).mean())


def rmse(preds: ArrayLike, targs: ArrayLike) -> float:
    """Root mean squared error: ``sqrt(mean((p - t)²))``."""
    return mse(preds, targs) ** 0.5


def mae(preds: ArrayLike, targs: ArrayLike) -> float:
    """Mean absolute error: ``mean(|p - t|)``."""
    p, t = _flat_pair(preds, targs)
    return float((p - t).abs().mean())
