"""The lesson's training step fused into one compiled loop on the CPU, with the lesson's semantics kept.

The compatible path (``DotProductBias``, ``MSELossFlat``, dense Adam/AdamW, a
1cycle or constant schedule) does the same thing every step: gather 64 rows,
a dot product, a squared error, the gradients, and an Adam update of every row
of every table. :class:`FusedDotBiasAdam` runs runs of those steps in
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

import warnings

import numpy as np
import torch

from collabkit.models.dot import DotProductBias

STEPS_PER_CALL = 256
"""Steps per compiled call: callbacks and the progress bar hear of the batches in runs of this many."""


class FusedDotBiasAdam:
    """Runs of Adam(W) steps of a ``DotProductBias`` on the CPU, in one compiled loop per run.

    Build it with :meth:`build`, then call :meth:`steps` with the loader's data,
    its epoch order and the schedule's values for each step.
    """

    def __init__(self, model: DotProductBias, opt: torch.optim.Optimizer, group: dict) -> None:
        self.model, self.opt, self.group = model, opt, group
        self.params = [model.u_weight.weight, model.i_weight.weight, model.u_bias.weight, model.i_bias.weight]
        self.grads = [np.zeros(tuple(p.shape), dtype=np.float32) for p in self.params]

    @classmethod
    def build(cls, model: DotProductBias, opt: torch.optim.Optimizer) -> FusedDotBiasAdam | None:
        """The fused runner for ``model`` and ``opt``, or ``None`` where it would not be exact."""
        if not isinstance(opt, torch.optim.Adam):  # AdamW is an Adam
            return None
        params = [model.u_weight.weight, model.i_weight.weight, model.u_bias.weight, model.i_bias.weight]
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

        return cls(model, opt, group)

    def _moments(self) -> list[dict]:
        """The optimizer's state for each table, created as torch would on its first step."""
        states = []
        for p in self.params:
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
        group, model = self.group, self.model
        decoupled = bool(group.get("decoupled_weight_decay", isinstance(self.opt, torch.optim.AdamW)))
        low, high = model.y_range if model.y_range is not None else (0.0, 1.0)
        losses = np.empty(len(lrs), dtype=np.float32)
        f32 = np.float32
        with torch.no_grad():
            dot_bias_adam_steps(
                x.numpy(), y.numpy(), order.numpy(), first, len(lrs), bs,
                np.asarray(lrs, dtype=f32), np.asarray(moms, dtype=f32), f32(group["betas"][1]), f32(group["eps"]),
                f32(group["weight_decay"]), decoupled, step0, f32(low), f32(high), model.y_range is not None,
                *(p.detach().numpy() for p in self.params), *self.grads,
                *(s["exp_avg"].numpy() for s in states), *(s["exp_avg_sq"].numpy() for s in states), losses,
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
