"""The lesson's training step fused into one compiled loop on the CPU, with the lesson's semantics kept.

The compatible path (``DotProductBias``, collabkit's or the lesson's own,
``MSELossFlat``, dense Adam/AdamW, a 1cycle or constant schedule) does the
same thing every step: gather 64 rows, a dot product, a squared error, the
gradients, and an Adam update of every row of every table.
:class:`FusedDotBiasAdam` runs runs of those steps in
:func:`collabkit.training.kernels.dot_bias_adam_steps` instead of through
torch's ops. Nothing about the training changes:

* the batches are the loader's (the same permutation from the same generator);
* the learning rate and β₁ of every step come from the torch scheduler,
  stepped as the plain loop steps it;
* the moments and step count live in the torch optimizer's own state, so a
  checkpoint, a resume or a later plain ``opt.step()`` carries on seamlessly.

It applies only where it computes exactly what the plain loop would:
:meth:`FusedDotBiasAdam.build` returns ``None`` for anything else (another
optimizer, a non-CPU device, amsgrad, ...), and the Learner takes the plain loop.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from collabkit.models.dot import is_stock_dot_bias
from collabkit.models.layers import sigmoid_range

log = logging.getLogger(__name__)

STEPS_PER_CALL = 256
"""Steps per compiled call: callbacks and the progress bar hear of the batches in runs of this many."""


@dataclass(frozen=True)
class DotBiasTables:
    """The four tables of a dot-product-with-biases model by role, and its output range (``None``: unbounded)."""

    users: torch.Tensor
    items: torch.Tensor
    user_bias: torch.Tensor
    item_bias: torch.Tensor
    y_range: tuple[float, float] | None

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.users, self.items, self.user_bias, self.item_bias]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        u, i = x[:, 0].long(), x[:, 1].long()
        z = (self.users[u] * self.items[i]).sum(1) + self.user_bias.reshape(-1)[u] + self.item_bias.reshape(-1)[i]
        return z if self.y_range is None else sigmoid_range(z, *self.y_range)


def dot_bias_tables(model: nn.Module, probe: torch.Tensor) -> DotBiasTables | None:
    """``model``'s tables by role, if it computes ``sigmoid_range(p_u·q_i + b_u + b_i, *y_range)``; else ``None``.

    collabkit's own ``DotProductBias`` is known by its class. Any other model
    (the lesson's own ``DotProductBias``, with ``Embedding`` or
    ``create_params``) qualifies when it has exactly four trainable tables of
    the right shapes and, with those tables filled with random values, its
    output on the ``probe`` rows equals the formula (with ``model.y_range``,
    or none) for one assignment of the tables to the roles. The weights are
    restored afterwards. Dropout, other layers or other maths fail the check.
    """
    if is_stock_dot_bias(model):
        return DotBiasTables(model.u_weight.weight, model.i_weight.weight, model.u_bias.weight, model.i_bias.weight,
                             model.y_range)
    params = list(model.parameters())
    if len(params) != 4 or not all(p.requires_grad for p in params) or any(True for _ in model.buffers()):
        return None
    wide = [p for p in params if p.ndim == 2 and p.shape[1] > 1]
    narrow = [p for p in params if p.ndim in (1, 2) and p.numel() == p.shape[0]]
    if len(wide) != 2 or len(narrow) != 2 or wide[0].shape[1] != wide[1].shape[1]:
        return None
    y_range = getattr(model, "y_range", None)
    ranges = [None]
    if isinstance(y_range, (tuple, list)) and len(y_range) == 2 and all(isinstance(v, (int, float)) for v in y_range):
        ranges.append((float(y_range[0]), float(y_range[1])))
    saved = [p.detach().clone() for p in params]
    generator = torch.Generator(device=params[0].device).manual_seed(0)
    try:
        with torch.no_grad():
            for p in params:
                p.copy_(torch.randn(p.shape, generator=generator, device=p.device) * 0.3)
            out = model(probe)
            again = model(probe)
            if not isinstance(out, torch.Tensor) or out.numel() != len(probe) or not torch.equal(out, again):
                return None
            out = out.reshape(-1).float()
            for users, items in (wide, wide[::-1]):
                for user_bias, item_bias in (narrow, narrow[::-1]):
                    if users.shape[0] != user_bias.shape[0] or items.shape[0] != item_bias.shape[0]:
                        continue
                    for low_high in ranges:
                        tables = DotBiasTables(users, items, user_bias, item_bias, low_high)
                        if torch.allclose(out, tables.predict(probe), rtol=1e-4, atol=1e-5):
                            return tables
        return None
    except Exception:  # noqa: BLE001 - a model that fails on the probe is simply not this one; training will say why
        return None
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)


class FusedDotBiasAdam:
    """Runs of Adam(W) steps of a dot-product-with-biases model on the CPU, in one compiled loop per run.

    Build it with :meth:`build`, then call :meth:`epoch` (or :meth:`steps`) with
    the loader's data, its epoch order and the schedule.
    """

    def __init__(self, tables: DotBiasTables, opt: torch.optim.Optimizer, group: dict) -> None:
        self.tables, self.opt, self.group = tables, opt, group
        self.grads = [np.zeros((p.shape[0], p.numel() // p.shape[0]), dtype=np.float32) for p in tables.params]

    @classmethod
    def build(cls, model: nn.Module, opt: torch.optim.Optimizer, probe: torch.Tensor) -> FusedDotBiasAdam | None:
        """The fused runner for ``model`` and ``opt``, or ``None`` where it would not be exact.

        ``probe`` is a few training rows, to recognise a model of the user's
        own (:func:`dot_bias_tables`).
        """
        if not isinstance(opt, torch.optim.Adam):  # AdamW is an Adam
            return None
        tables = dot_bias_tables(model, probe)
        if tables is None:
            return None
        params = tables.params
        owners = [g for g in opt.param_groups for p in g["params"] if any(p is q for q in params)]
        if len(owners) != 4 or any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
            return None
        if not all(p.is_contiguous() for p in params):
            return None
        group = owners[0]
        same = ("lr", "betas", "eps", "weight_decay")
        if any(any(g[key] != group[key] for key in same) for g in owners):
            return None
        if group.get("amsgrad") or group.get("maximize") or group.get("differentiable") or group.get("capturable"):
            return None
        from collabkit.training import kernels  # noqa: F401 - compile (or load the cache) now, not mid-epoch

        return cls(tables, opt, group)

    def _moments(self) -> list[dict]:
        """The optimizer's state for each table, created as torch would on its first step."""
        states = []
        for p in self.tables.params:
            state = self.opt.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            states.append(state)
        return states

    def steps(
        self, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, first: int, bs: int, lrs: list[float],
        moms: list[float],
    ) -> np.ndarray:
        """``len(lrs)`` steps on the batches of ``bs`` rows of ``order`` from row ``first``; returns their losses."""
        from collabkit.training.kernels import dot_bias_adam_steps

        states = self._moments()
        step0 = int(states[0]["step"])
        group = self.group
        decoupled = bool(group.get("decoupled_weight_decay", isinstance(self.opt, torch.optim.AdamW)))
        y_range = self.tables.y_range
        low, high = y_range if y_range is not None else (0.0, 1.0)
        losses = np.empty(len(lrs), dtype=np.float32)
        f32 = np.float32

        def table(t: torch.Tensor) -> np.ndarray:  # biases may be (n,) or (n, 1); the loop wants (n, width)
            return t.detach().numpy().reshape(t.shape[0], -1)

        with torch.no_grad():
            dot_bias_adam_steps(
                x.numpy(), y.numpy(), order.numpy(), first, len(lrs), bs,
                np.asarray(lrs, dtype=f32), np.asarray(moms, dtype=f32), f32(group["betas"][1]), f32(group["eps"]),
                f32(group["weight_decay"]), decoupled, step0, f32(low), f32(high), y_range is not None,
                *map(table, self.tables.params), *self.grads,
                *(table(s["exp_avg"]) for s in states), *(table(s["exp_avg_sq"]) for s in states), losses,
            )
        for state in states:
            state["step"] += len(lrs)
        return losses

    def epoch(self, x, y, order, n_batches, bs, schedule, recorder, after_batch) -> np.ndarray:
        """One epoch of ``n_batches`` steps; the schedule is stepped and the recorder fed per step.

        ``after_batch(k)`` is called for every batch, after the run it belongs to.
        """
        losses = np.empty(n_batches, dtype=np.float32)
        with warnings.catch_warnings():  # the fused steps never call opt.step(), which torch's scheduler checks for
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*optimizer.step", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*optimizer.step.*overridden", category=UserWarning)
            for first in range(0, n_batches, STEPS_PER_CALL):
                count = min(STEPS_PER_CALL, n_batches - first)
                lrs, moms = [], []
                for _ in range(count):
                    lrs.append(self.group["lr"])
                    moms.append(self.group["betas"][0])
                    if schedule is not None:
                        schedule.step()
                losses[first : first + count] = self.steps(x, y, order, first * bs, bs, lrs, moms)
                recorder.lrs.extend(lrs)
                recorder.moms.extend(moms)
                for k in range(first, first + count):
                    after_batch(k)
        return losses


_loading: threading.Thread | None = None
_loading_lock = threading.Lock()


def load_in_background() -> None:
    """Start loading the compiled loop in a thread, once per process; returns at once.

    Loading it (numba's import, then its cached machine code) takes about 0.6 s
    of the first fit in a process. The lesson's data cell calls this
    (``collabkit.fastai.CollabDataLoaders.from_df``), so that by the time the
    notebook reaches its first fit, cells later, the loop is ready. A fit that
    starts sooner waits for the load where it would have done it itself.
    """
    global _loading
    with _loading_lock:
        if _loading is None:
            _loading = threading.Thread(target=_load_loop, name="collabkit-load-loop")
            _loading.start()


def _load_loop() -> None:
    """Steps on a two-user table of zeros: the first call loads the loop for the argument types every fit passes.

    Nothing here draws a random number: the thread runs beside the user's code,
    which owns torch's global generator.
    """
    from collabkit.training.optim import AdamW  # torch's, built without importing torch._dynamo

    try:
        params = [torch.zeros(2, 4, requires_grad=True), torch.zeros(2, 4, requires_grad=True),
                  torch.zeros(2, 1, requires_grad=True), torch.zeros(2, 1, requires_grad=True)]
        opt = AdamW(params, lr=1e-3)
        fused = FusedDotBiasAdam(DotBiasTables(*params, y_range=(0.0, 5.0)), opt, opt.param_groups[0])
        x = torch.tensor([[0, 0], [1, 1]], dtype=torch.int32)  # the loaders' index dtype
        fused.steps(x, torch.ones(2), torch.arange(2), 0, 2, [1e-3], [0.9])
    except Exception:  # noqa: BLE001 - only a head start: the fit loads the loop itself and reports any error there
        log.debug("loading the compiled loop in the background failed", exc_info=True)
