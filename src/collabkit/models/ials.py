"""Implicit ALS: matrix factorisation of who-interacted-with-what (Hu, Koren & Volinsky 2008).

Every (user, item) cell counts: a cell with an interaction of value ``r`` is a
preference ``p = 1`` held with confidence ``c = 1 + α r``; every other cell is
``p = 0`` with confidence 1. The factors minimise::

    Σ_u Σ_i c_ui (p_ui - x_u · y_i)²  +  λ (Σ_u |x_u|² + Σ_i |y_i|²)

    score(u, i) = x_u · y_i

Alternating least squares fixes one side and solves the other exactly: user
``u``'s vector solves ``(YᵀY + λI + Σ_{i∈u} α r_ui y_i y_iᵀ) x = Σ_{i∈u} (1 + α r_ui) y_i``,
so the cost per half-sweep is the interactions times the factors, not the
catalogue: this is the ranker for data too large for EASE. Each half-sweep
runs a few conjugate-gradient steps per row, warm-started from the last
sweep's vector (Takács, Pilászy & Tikk 2011; the ``implicit`` package does
the same), in a compiled loop over rows on all cores.

A new user is folded in by the same normal equations, solved exactly for
their items; trained users keep their fitted vectors. Similar items are the
cosine of the item vectors.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from collabkit.data.interactions import Interactions
from collabkit.errors import ConfigError, TrainingDivergedError
from collabkit.models.ranker import Ranker

log = logging.getLogger(__name__)


def _cg_kernel():
    """The compiled half-sweep, built on first use (numba is imported only by the models that need it)."""
    from numba import njit, prange

    from collabkit.training import numba_threads  # noqa: F401 - numba's workqueue pool, before any parallel loop

    @njit(parallel=True, fastmath=True, error_model="numpy", cache=True, nogil=True)
    def solve_rows(indptr, indices, weight, other, gram, x, l2, steps):  # pragma: no cover - compiled
        n, d = x.shape
        for u in prange(n):
            xu = x[u].copy()
            r = np.empty(d, dtype=np.float32)
            for a in range(d):  # r = b - A x, the part of A without the row's items
                s = l2 * xu[a]
                for b in range(d):
                    s += gram[a, b] * xu[b]
                r[a] = -s
            for k in range(indptr[u], indptr[u + 1]):
                y = other[indices[k]]
                w = weight[k]
                dot = np.float32(0.0)
                for a in range(d):
                    dot += y[a] * xu[a]
                coef = 1 + w - w * dot
                for a in range(d):
                    r[a] += coef * y[a]
            p = r.copy()
            rs = np.float32(0.0)
            for a in range(d):
                rs += r[a] * r[a]
            ap = np.empty(d, dtype=np.float32)
            for _ in range(steps):
                if rs < 1e-20:
                    break
                for a in range(d):
                    s = l2 * p[a]
                    for b in range(d):
                        s += gram[a, b] * p[b]
                    ap[a] = s
                for k in range(indptr[u], indptr[u + 1]):
                    y = other[indices[k]]
                    dot = np.float32(0.0)
                    for a in range(d):
                        dot += y[a] * p[a]
                    coef = weight[k] * dot
                    for a in range(d):
                        ap[a] += coef * y[a]
                pap = np.float32(0.0)
                for a in range(d):
                    pap += p[a] * ap[a]
                alpha = rs / pap
                new_rs = np.float32(0.0)
                for a in range(d):
                    xu[a] += alpha * p[a]
                    r[a] -= alpha * ap[a]
                    new_rs += r[a] * r[a]
                for a in range(d):
                    p[a] = r[a] + (new_rs / rs) * p[a]
                rs = new_rs
            x[u] = xu

    return solve_rows


class ImplicitALS(Ranker):
    """Weighted matrix factorisation of implicit feedback; see the module docstring for the model.

    Args:
        n_factors: length of the user and item vectors.
        l2: λ, the L2 penalty on every vector.
        alpha: confidence per unit of interaction value (``c = 1 + α r``). The defaults (λ 50, α 2) won a
            grid on validation splits carved from ML-100K u1.base and ml-latest-small's training part
            (``bench/ranking.py --tune``).
        epochs: alternating sweeps (users, then items).
        cg_steps: conjugate-gradient steps per row and half-sweep.
        seed: seeds the initial vectors.
    """

    name = "ials"
    item_similarity = True

    def __init__(
        self, n_factors: int = 64, l2: float = 50.0, alpha: float = 2.0, epochs: int = 15, cg_steps: int = 3,
        seed: int = 0,
    ) -> None:
        if not (n_factors >= 1 and epochs >= 1 and cg_steps >= 1 and l2 > 0 and alpha > 0):
            raise ConfigError(
                f"ImplicitALS needs positive n_factors, epochs, cg_steps, l2 and alpha; got "
                f"{n_factors}, {epochs}, {cg_steps}, {l2}, {alpha}"
            )
        self.n_factors, self.l2, self.alpha = int(n_factors), float(l2), float(alpha)
        self.epochs, self.cg_steps, self.seed = int(epochs), int(cg_steps), int(seed)
        self.user_factors: torch.Tensor | None = None
        self.item_factors: torch.Tensor | None = None

    def config(self) -> dict:
        return {"n_factors": self.n_factors, "l2": self.l2, "alpha": self.alpha, "epochs": self.epochs,
                "cg_steps": self.cg_steps, "seed": self.seed}

    def fit(self, interactions: Interactions) -> ImplicitALS:
        solve_rows = _cg_kernel()
        rng = np.random.default_rng(self.seed)
        d = self.n_factors
        users = (rng.standard_normal((interactions.n_users, d)) * 0.1 / d**0.5).astype(np.float32)
        items = (rng.standard_normal((interactions.n_items, d)) * 0.1 / d**0.5).astype(np.float32)
        by_user = (interactions.indptr, interactions.indices, interactions.values * np.float32(self.alpha))
        by_item = _transpose(interactions, self.alpha)
        l2 = np.float32(self.l2)
        for epoch in range(self.epochs):
            started = time.perf_counter()
            solve_rows(*by_user, items, items.T @ items, users, l2, self.cg_steps)
            solve_rows(*by_item, users, users.T @ users, items, l2, self.cg_steps)
            if not (np.isfinite(users).all() and np.isfinite(items).all()):
                raise TrainingDivergedError(f"implicit ALS diverged in sweep {epoch + 1}: raise l2 or lower alpha")
            log.info("iALS sweep %d/%d: %.2f s", epoch + 1, self.epochs, time.perf_counter() - started)
        self.user_factors, self.item_factors = torch.from_numpy(users), torch.from_numpy(items)
        self.n_items = interactions.n_items
        return self

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(user_factors, item_factors)`` of a fitted model (:class:`NotFittedError` before fit)."""
        self._fitted()
        assert self.user_factors is not None and self.item_factors is not None  # (set with n_items)
        return self.user_factors, self.item_factors

    def _fold_in(self, users: Interactions) -> torch.Tensor:
        """Exact solves of the user step, one per row of ``users``."""
        _, y = self._factors()
        base = y.T @ y + self.l2 * torch.eye(self.n_factors)
        out = []
        for k in range(users.n_users):
            span = slice(users.indptr[k], users.indptr[k + 1])
            w = self.alpha * torch.from_numpy(users.values[span])
            yi = y[torch.from_numpy(users.indices[span])]
            out.append(torch.linalg.solve(base + (yi.T * w) @ yi, yi.T @ (1 + w)))
        return torch.stack(out) if out else y.new_zeros((0, self.n_factors))

    def score(self, users: Interactions, user_rows: np.ndarray) -> torch.Tensor:
        user_factors, item_factors = self._factors()
        user_rows = np.asarray(user_rows, dtype=np.int64)
        vectors = user_factors[torch.from_numpy(np.maximum(user_rows, 0))].clone()
        new = np.flatnonzero(user_rows < 0)
        if len(new):
            vectors[torch.from_numpy(new)] = self._fold_in(users.take(new))
        return vectors @ item_factors.T

    def similar_to(self, row: int) -> torch.Tensor:
        _, item_factors = self._factors()
        unit = torch.nn.functional.normalize(item_factors, dim=1)
        return unit @ unit[row]

    def state(self) -> dict[str, torch.Tensor]:
        user_factors, item_factors = self._factors()
        return {"user_factors": user_factors, "item_factors": item_factors}

    def load_state(self, tensors: dict[str, torch.Tensor], n_users: int, n_items: int) -> None:
        self._expect(tensors, {"user_factors": (n_users, self.n_factors), "item_factors": (n_items, self.n_factors)})
        self.user_factors, self.item_factors = tensors["user_factors"].float(), tensors["item_factors"].float()
        self.n_items = n_items


def _transpose(interactions: Interactions, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The items × users CSR of the same entries (``indptr, indices, α · values``)."""
    users = interactions.row_users()
    order = np.argsort(interactions.indices, kind="stable")
    indptr = np.zeros(interactions.n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(interactions.indices, minlength=interactions.n_items), out=indptr[1:])
    return indptr, users[order], interactions.values[order] * np.float32(alpha)



