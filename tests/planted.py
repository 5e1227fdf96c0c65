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


def planted_clusters(
    n_groups: int = 4,
    users_per_group: int = 50,
    items_per_group: int = 30,
    density: float = 0.5,
    noise: float = 0.3,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Users who love the items of their own group (≈4.5 stars) and dislike the rest (≈2).

    Returns ``(ratings, user_group, item_group)``: ratings has columns
    ``user, item, rating, title``; user ``u`` belongs to ``user_group[u]`` and
    item ``i`` to ``item_group[i]``, both in ``0 .. n_groups - 1``.
    """
    rng = np.random.default_rng(seed)
    user_group = np.repeat(np.arange(n_groups), users_per_group)
    item_group = np.repeat(np.arange(n_groups), items_per_group)
    quality = rng.normal(0, 0.2, len(item_group))
    mask = rng.random((len(user_group), len(item_group))) < density
    users, items = np.nonzero(mask)
    liked = user_group[users] == item_group[items]
    rating = np.where(liked, 4.5, 2.0) + quality[items] + rng.normal(0, noise, len(users))
    frame = pd.DataFrame({"user": users, "item": items, "rating": rating.clip(0.5, 5.5).astype(np.float32)})
    frame["title"] = [f"Group {item_group[i]} film {i}" for i in items]
    return frame, user_group, item_group


def train_recommender(frame, model_factory=None, seed=0, valid_pct=0.1, epochs=6):
    """A Recommender trained on ``frame`` (user, item, rating, title columns): DotProductBias with 8 factors
    unless ``model_factory(n_users, n_items)`` says otherwise; seeded, one-cycle at lr 3e-2."""
    import torch

    from collabkit import CollabDataLoaders, DotProductBias, Learner, Recommender

    torch.manual_seed(seed)
    dls = CollabDataLoaders.from_df(frame[["user", "item", "rating"]], valid_pct=valid_pct, seed=seed, bs=128)
    model = (model_factory or (lambda u, i: DotProductBias(u, i, 8, (0, 6))))(len(dls.users), len(dls.items))
    learn = Learner(dls, model, progress=False)
    learn.fit_one_cycle(epochs, 3e-2, wd=0.01)
    titles = frame.drop_duplicates("item").set_index("item")["title"].to_dict()
    return Recommender.from_learner(learn, titles=titles)


def unused_port() -> int:
    """A local TCP port nothing listens on (a connection to it is refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def planted_interactions(
    n_groups: int = 4, users_per_group: int = 40, items_per_group: int = 25, inside: float = 0.5, outside: float = 0.03,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Implicit feedback with a known answer: each user plays about half of their own group's items and a few
    others. Returns ``(plays, user_group, item_group)``; plays has columns ``user, item, plays``, one row per
    pair, and a user's own-group items they have not played are the right top-N."""
    rng = np.random.default_rng(seed)
    user_group = np.repeat(np.arange(n_groups), users_per_group)
    item_group = np.repeat(np.arange(n_groups), items_per_group)
    same = user_group[:, None] == item_group[None, :]
    mask = rng.random(same.shape) < np.where(same, inside, outside)
    users, items = np.nonzero(mask)
    plays = rng.integers(1, 6, len(users))
    return pd.DataFrame({"user": users, "item": items, "plays": plays}), user_group, item_group
