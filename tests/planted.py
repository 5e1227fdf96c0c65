"""Ratings generated from known low-rank factors plus Gaussian noise: data with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd


def planted_ratings(
    n_users: int = 300,
    n_items: int = 200,
    rank: int = 4,
    density: float = 0.35,
    noise: float = 0.25,
    seed: int = 0,
) -> pd.DataFrame:
    """``user, item, rating`` with ``rating = 3 + b_u + b_i + p_u·q_i + N(0, noise²)``.

    The signal spans roughly 1..5, so a model with ``y_range=(0, 6)`` never
    clips it, and the best achievable RMSE is ``noise``.
    """
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 1, (n_users, rank)) / rank**0.5
    q = rng.normal(0, 1, (n_items, rank)) / rank**0.5
    b_u = rng.normal(0, 0.3, n_users)
    b_i = rng.normal(0, 0.3, n_items)
    mask = rng.random((n_users, n_items)) < density
    users, items = np.nonzero(mask)
    signal = 3 + b_u[users] + b_i[items] + (p[users] * q[items]).sum(1)
    rating = signal + rng.normal(0, noise, len(users))
    return pd.DataFrame({"user": users + 1000, "item": items, "rating": rating.astype(np.float32)})
