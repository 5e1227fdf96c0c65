"""A neural network over concatenated user and item embeddings (fastai's ``EmbeddingNN``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from collabkit.errors import ConfigError
from collabkit.models.factors import FactorView
from collabkit.models.layers import Embedding, checked_y_range, positive_ints, sigmoid_range


def emb_sz_rule(n_cat: int) -> int:
    """fastai's rule of thumb for an embedding width: ``min(600, round(1.6 * n_cat ** 0.56))``."""
    return int(min(600, round(1.6 * n_cat**0.56)))


class EmbeddingNN(nn.Module):
    """Embed user and item, concatenate, then an MLP down to one rating.

    Prediction::

        h_0 = dropout([E_user[u], E_item[i]], embed_p)
        h_k = dropout(BatchNorm(ReLU(W_k h_{k-1})), ps[k])   for each hidden layer
        r̂  = sigmoid_range(w · h_K + b, *y_range)

    Args:
        emb_szs: ``[(n_users, width), (n_items, width)]``.
        layers: sizes of the hidden layers, e.g. ``[100, 50]``.
        ps: dropout after each hidden layer (``None``: no dropout).
        embed_p: dropout on the concatenated embeddings.
        y_range: optional (low, high) output range.
        use_bn: batch norm after each hidden layer's activation.

    ``forward`` takes ``(batch, 2)`` (user row, item row) and returns ``(batch,)``.
    """

    def __init__(
        self,
        emb_szs: Sequence[tuple[int, int]],
        layers: Sequence[int] = (50,),
        ps: Sequence[float] | None = None,
        embed_p: float = 0.0,
        y_range: tuple[float, float] | None = None,
        use_bn: bool = True,
    ):
        super().__init__()
        if isinstance(emb_szs, str) or len(emb_szs) != 2 or any(len(positive_ints("emb_szs", sz)) != 2 for sz in emb_szs):
            raise ConfigError(f"emb_szs must hold (n, width) for users and items, got {emb_szs!r}")
        layers = positive_ints("layers", layers)
        y_range = checked_y_range(y_range)
        ps = [0.0] * len(layers) if ps is None else [float(p) for p in ps]
        if len(ps) != len(layers):
            raise ConfigError(f"ps must give one dropout per hidden layer ({len(layers)}), got {len(ps)}")
        self.emb_szs = [(int(n), int(w)) for n, w in emb_szs]
        self.embeds = nn.ModuleList([Embedding(n, w) for n, w in self.emb_szs])
        self.emb_drop = nn.Dropout(embed_p)
        blocks: list[nn.Module] = []
        width = sum(w for _, w in self.emb_szs)
        for size, p in zip(layers, ps):
            blocks += [nn.Linear(width, size, bias=not use_bn), nn.ReLU(inplace=True)]
            if use_bn:
                blocks.append(nn.BatchNorm1d(size))
            if p:
                blocks.append(nn.Dropout(p))
            width = size
        blocks.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*blocks)
        self.y_range = tuple(float(v) for v in y_range) if y_range is not None else None
        self._config = {
            "emb_szs": [list(sz) for sz in self.emb_szs],
            "layers": layers,
            "ps": ps,
            "embed_p": float(embed_p),
            "y_range": self.y_range,
            "use_bn": bool(use_bn),
        }

    def config(self) -> dict:
        """The constructor arguments, JSON-ready: ``EmbeddingNN(**m.config())`` rebuilds the model."""
        return dict(self._config)

    ID_TABLES = {"user": "embeds.0.weight", "item": "embeds.1.weight"}
    """The weights with a row per user and per item (checked against the vocabularies on load)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embeds[0](x[:, 0]), self.embeds[1](x[:, 1]))

    def factor_view(self) -> FactorView:
        """The embeddings, rated through :meth:`head`."""
        users, items = (cast(Embedding, table) for table in self.embeds)
        e_u, e_i = users.weight.detach(), items.weight.detach()
        return FactorView(e_u, e_i, e_u, e_i, head=self.head)

    def head(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Ratings from user and item embedding vectors (``(n, w_user)``, ``(n, w_item)``)."""
        res = self.layers(self.emb_drop(torch.cat([users, items], dim=1))).squeeze(1)
        return res if self.y_range is None else sigmoid_range(res, *self.y_range)
