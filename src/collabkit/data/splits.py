"""Ways to divide a ratings table into training and validation rows."""

from __future__ import annotations

import numpy as np
import torch


def random_split(n_rows: int, valid_pct: float = 0.2, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row positions for a random train/valid split.

    The same recipe as fastai's ``RandomSplitter``: ``torch.randperm`` seeded with
    ``seed``, the first ``int(valid_pct * n_rows)`` positions go to validation.
    With the same seed, the split is the one fastai makes.

    Returns:
        ``(train_idx, valid_idx)`` as int64 arrays.
    """
    if not 0.0 <= valid_pct < 1.0:
        raise ValueError(f"valid_pct must be in [0, 1), got {valid_pct}")
    if n_rows < 1:
        raise ValueError(f"cannot split {n_rows} rows")
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    order = torch.randperm(n_rows, generator=generator).numpy()
    cut = int(valid_pct * n_rows)
    return order[cut:], order[:cut]
