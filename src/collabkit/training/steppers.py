"""How the SGD solver takes one epoch of steps: the single place that picks a fast path or autograd.

:func:`stepper_for` looks at the model, the loss, the optimizer and the process
count once per fit and returns one of three steppers, which the Learner's loop
calls once per epoch:

* :class:`FusedStepper`: the lesson's case (a ``DotProductBias``, collabkit's or
  one of the same forward, ``MSELossFlat``, Adam/AdamW on the CPU) in one
  compiled loop (:mod:`collabkit.training.fused`);
* :class:`HandGradStepper`: a stock ``DotProductBias`` with ``MSELossFlat``
  elsewhere (another optimizer, a GPU): gradients written by hand
  (:func:`dot_bias_mse_grads`), then ``opt.step()``;
* :class:`AutogradStepper`: everything else: forward, loss (plus the
  ``l2-loss`` term), backward, ``opt.step()``.

All three make the same updates where more than one applies (tested); the log
says at INFO which one a fit took. ``Learner(fast=False)`` always takes autograd.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from collabkit.models import DotProductBias
from collabkit.models.dot import is_stock_dot_bias
from collabkit.training.fused import FusedDotBiasAdam
from collabkit.training.optim import l2_penalty, split_decay_params

log = logging.getLogger(__name__)


class Stepper(Protocol):
    """One epoch of optimizer steps over the training batches; returns the loss of every batch."""

    name: str

    def epoch(self, train, n_batches: int, schedule, recorder, after_batch: Callable[[int], object]) -> torch.Tensor:
        ...


def stepper_for(learn, opt: torch.optim.Optimizer, penalty: float, net: nn.Module) -> Stepper:
    """The fastest stepper that makes exactly the updates autograd would for this fit (logged at INFO).

    ``penalty`` is the ``l2-loss`` weight (0 otherwise); ``net`` is the module to call (the model, or its
    ``DistributedDataParallel`` wrapper).
    """
    model, train = learn.model, learn.dls.train
    plain_mse = learn.plain_mse(penalty)
    fused = FusedDotBiasAdam.build(model, opt, train.x[:256]) if plain_mse else None
    if fused is not None:
        stepper: Stepper = FusedStepper(fused)
    elif plain_mse and is_stock_dot_bias(model):
        stepper = HandGradStepper(model, opt)
    else:
        decayed = split_decay_params(model, learn.wd_bn_bias)[0] if penalty else []
        stepper = AutogradStepper(net, learn.loss_func, opt, decayed, penalty)
    log.info("SGD steps: %s", stepper.name)
    return stepper


def _record_hypers(recorder, opt: torch.optim.Optimizer) -> None:
    group = opt.param_groups[0]
    recorder.lrs.append(group["lr"])
    recorder.moms.append(group["betas"][0] if "betas" in group else group.get("momentum", 0.0))


class FusedStepper:
    """Runs of steps in the compiled loop of :class:`~collabkit.training.fused.FusedDotBiasAdam`."""

    name = "fused compiled loop (DotProductBias, MSE, Adam on the CPU)"

    def __init__(self, fused: FusedDotBiasAdam) -> None:
        self.fused = fused

    def epoch(self, train, n_batches, schedule, recorder, after_batch) -> torch.Tensor:
        order = train.epoch_order()
        order = torch.arange(train.n) if order is None else order
        losses = self.fused.epoch(train.x, train.y, order, n_batches, train.bs, schedule, recorder, after_batch)
        return torch.from_numpy(losses)


class _BatchStepper:
    """The per-batch frame the hand-written and the autograd steppers share."""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt

    def loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The batch's loss, with the gradients in ``.grad``."""
        raise NotImplementedError

    def epoch(self, train, n_batches, schedule, recorder, after_batch) -> torch.Tensor:
        losses = torch.empty(n_batches, device=train.x.device)
        for k, (xb, yb) in enumerate(train):
            loss = self.loss(xb, yb)
            _record_hypers(recorder, self.opt)
            self.opt.step()
            if schedule is not None:
                schedule.step()
            losses[k] = loss.detach()
            after_batch(k)
        return losses


class HandGradStepper(_BatchStepper):
    """``DotProductBias`` + MSE with the gradients written by :func:`dot_bias_mse_grads`."""

    name = "hand-written gradients (DotProductBias, MSE)"

    def __init__(self, model: DotProductBias, opt: torch.optim.Optimizer) -> None:
        super().__init__(opt)
        self.model = model

    def loss(self, xb, yb):
        return dot_bias_mse_grads(self.model, xb, yb)


class AutogradStepper(_BatchStepper):
    """Forward, loss (plus ``penalty · Σp²`` in ``l2-loss`` mode), backward: any model, any loss."""

    name = "autograd"

    def __init__(self, net: nn.Module, loss_func, opt: torch.optim.Optimizer, decay_params, penalty: float) -> None:
        super().__init__(opt)
        self.net, self.loss_func, self.decay_params, self.penalty = net, loss_func, decay_params, penalty

    def loss(self, xb, yb):
        loss = self.loss_func(self.net(xb), yb)
        objective = loss + l2_penalty(self.decay_params, self.penalty) if self.penalty else loss
        self.opt.zero_grad(set_to_none=True)
        objective.backward()
        return loss


def dot_bias_mse_grads(model: DotProductBias, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``model`` on a batch, with its gradients written into the ``.grad`` of the
    four tables by hand: what autograd would compute, in a fraction of the calls.

    With ``z = p_u·q_i + b_u + b_i`` and ``r̂ = low + (high - low)·σ(z)`` (or ``r̂ = z``)::

        ∂L/∂z = 2 (r̂ - r) / n · (high - low) σ(z) (1 - σ(z))
        ∂L/∂p_u = Σ ∂L/∂z · q_i      ∂L/∂q_i = Σ ∂L/∂z · p_u      ∂L/∂b = Σ ∂L/∂z

    summed over the rows of each user and item in the batch. Every row of each
    ``.grad`` is written (zeros where the batch has no rating), exactly as
    autograd's dense embedding gradient. Returns the loss (a 0-d tensor).
    """
    users, items = x[:, 0], x[:, 1]
    P, Q = model.u_weight.weight, model.i_weight.weight
    p, q = P.index_select(0, users), Q.index_select(0, items)
    z = (p * q).sum(1) + model.u_bias.weight.index_select(0, users)[:, 0] + model.i_bias.weight.index_select(0, items)[:, 0]
    y = y.reshape(-1).float()
    slope: torch.Tensor | float
    if model.y_range is None:
        pred, slope = z, 1.0
    else:
        low, high = model.y_range
        s = torch.sigmoid(z)
        pred, slope = s * (high - low) + low, (high - low) * s * (1 - s)
    err = pred - y
    dz = (2.0 / len(y)) * err * slope
    for table, rows, values in (
        (P, users, dz[:, None] * q),
        (Q, items, dz[:, None] * p),
        (model.u_bias.weight, users, dz[:, None]),
        (model.i_bias.weight, items, dz[:, None]),
    ):
        if table.grad is None:
            table.grad = torch.zeros_like(table)
        else:
            table.grad.zero_()
        table.grad.index_add_(0, rows, values)
    return (err * err).mean()
