"""Matrix factorisation: a rating is the dot product of a user vector and an item vector."""

from __future__ import annotations

import torch
from torch import nn

from collabkit.models.factors import FactorView
from collabkit.models.layers import Embedding, checked_y_range, positive_int, sigmoid_range


def _check_sizes(n_users: int, n_items: int, n_factors: int) -> tuple[int, int, int]:
    """The three sizes as plain ints (numpy ints too, so that config() is JSON), each checked positive."""
    return positive_int("n_users", n_users), positive_int("n_items", n_items), positive_int("n_factors", n_factors)


class DotProduct(nn.Module):
    """The lesson's first model.

    Prediction::

        r̂(u, i) = p_u · q_i                      (y_range=None)
        r̂(u, i) = sigmoid_range(p_u · q_i, *y_range)

    Args:
        n_users, n_items: rows of the two embedding tables.
        n_factors: length of each user and item vector.
        y_range: optional (low, high) output range.

    ``forward`` takes ``x`` of shape ``(batch, 2)`` holding (user row, item row)
    and returns ``(batch,)`` predicted ratings.
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50, y_range: tuple[float, float] | None = None):
        super().__init__()
        n_users, n_items, n_factors = _check_sizes(n_users, n_items, n_factors)
        self.u_weight = Embedding(n_users, n_factors)
        self.i_weight = Embedding(n_items, n_factors)
        self.y_range = checked_y_range(y_range)
        self._config = {"n_users": n_users, "n_items": n_items, "n_factors": n_factors, "y_range": self.y_range}

    def config(self) -> dict:
        """The constructor arguments, JSON-ready: ``type(self)(**m.config())`` rebuilds the model."""
        return dict(self._config)

    ID_TABLES = {"user": "u_weight.weight", "item": "i_weight.weight"}
    """The weights with a row per user and per item (checked against the vocabularies on load)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = (self.u_weight(x[:, 0]) * self.i_weight(x[:, 1])).sum(dim=1)
        return res if self.y_range is None else sigmoid_range(res, *self.y_range)

    def factor_view(self) -> FactorView:
        """The users' and items' factor vectors: a rating is ``sigmoid_range(p_u · q_i, *y_range)``."""
        p, q = self.u_weight.weight.detach(), self.i_weight.weight.detach()
        return FactorView(p, q, p, q, y_range=self.y_range)


class DotProductBias(nn.Module):
    """Dot product plus a user bias and an item bias, squashed into ``y_range``.

    The same model as fastai's ``EmbeddingDotBias`` (and the lesson's
    ``DotProductBias``), with fastai's attribute names.

    Prediction::

        r̂(u, i) = sigmoid_range(p_u · q_i + b_u + b_i, *y_range)

    Trained with MSE and weight decay ``wd`` this minimises, in the L2 form,
    ``Σ (r - r̂)² / n + wd · (‖P‖² + ‖Q‖² + ‖b_user‖² + ‖b_item‖²)``.

    Args:
        n_users, n_items: rows of the embedding tables.
        n_factors: length of each user and item vector.
        y_range: (low, high) output range, or ``None`` for an unbounded output.

    Attributes:
        u_weight, i_weight: ``Embedding(n, n_factors)`` factor tables.
        u_bias, i_bias: ``Embedding(n, 1)`` bias tables.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int = 50,
        y_range: tuple[float, float] | None = (0.0, 5.5),
    ):
        super().__init__()
        n_users, n_items, n_factors = _check_sizes(n_users, n_items, n_factors)
        self.u_weight = Embedding(n_users, n_factors)
        self.i_weight = Embedding(n_items, n_factors)
        self.u_bias = Embedding(n_users, 1)
        self.i_bias = Embedding(n_items, 1)
        self.y_range = checked_y_range(y_range)
        self._config = {"n_users": n_users, "n_items": n_items, "n_factors": n_factors, "y_range": self.y_range}

    def config(self) -> dict:
        """The constructor arguments, JSON-ready: ``type(self)(**m.config())`` rebuilds the model."""
        return dict(self._config)

    ID_TABLES = {"user": "u_weight.weight", "item": "i_weight.weight"}
    """The weights with a row per user and per item (checked against the vocabularies on load)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        users, items = x[:, 0], x[:, 1]
        res = (self.u_weight(users) * self.i_weight(items)).sum(dim=1)
        res = res + self.u_bias(users).squeeze(1) + self.i_bias(items).squeeze(1)
        return res if self.y_range is None else sigmoid_range(res, *self.y_range)

    def factor_view(self) -> FactorView:
        """Biases folded into the vectors: a user is ``[p_u, b_u, 1]`` and an item ``[q_i, 1, b_i]``, so that
        their dot product is ``p_u · q_i + b_u + b_i`` (the trailing 1 is fixed in fold-in)."""
        p, q = self.u_weight.weight.detach(), self.i_weight.weight.detach()
        b_u, b_i = self.u_bias.weight.detach(), self.i_bias.weight.detach()
        users = torch.cat([p, b_u, torch.ones_like(b_u)], 1)
        items = torch.cat([q, torch.ones_like(b_i), b_i], 1)
        return FactorView(users, items, p, q, fixed_tail=1, y_range=self.y_range)


def is_stock_dot_bias(model: nn.Module) -> bool:
    """Whether ``model`` computes exactly :class:`DotProductBias`'s forward: the class, or a subclass that
    keeps its ``forward`` (what the hand-written gradients and the fused loop assume)."""
    return isinstance(model, DotProductBias) and type(model).forward is DotProductBias.forward
