"""The optimizer and the three forms of weight decay.

Weight decay is *the* regulariser of collaborative filtering, and the lesson
meets it in three shapes. collabkit offers all three, chosen by ``wd_mode``:

``"decoupled"`` (default, fastai's and AdamW's)
    After the Adam step, every weight shrinks: ``p ← p - lr · wd · p``.
``"l2"`` (the lesson's gradient form)
    Before the Adam step: ``p.grad += 2 · wd · p``. Implemented as
    ``torch.optim.Adam(weight_decay=2 * wd)``.
``"l2-loss"`` (the lesson's loss form)
    ``loss + wd · Σ p²``, differentiated by autograd. It gives exactly the same
    gradients as ``"l2"``, only slower; it is here to show that they agree.

Embeddings are decayed (they are the parameters that overfit). As in fastai
(``wd_bn_bias=False``), batch-norm parameters and ``Linear`` biases are not.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from collabkit.errors import ConfigError

WD_MODES: tuple[str, ...] = ("decoupled", "l2", "l2-loss")
DEFAULT_WD = 0.01
"""Weight decay used when neither the Learner nor the fit call gives one (fastai's Adam default)."""

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def check_wd_mode(wd_mode: str) -> str:
    if wd_mode not in WD_MODES:
        raise ConfigError(f"wd_mode must be one of {WD_MODES}, got {wd_mode!r}")
    return wd_mode


def split_decay_params(model: nn.Module, wd_bn_bias: bool = False) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decayed, not_decayed)`` trainable parameters of ``model``.

    With ``wd_bn_bias=False`` the parameters of norm layers and the ``bias`` of
    ``Linear`` layers are not decayed; everything else is, embeddings included.
    """
    skip: set[int] = set()
    if not wd_bn_bias:
        for module in model.modules():
            if isinstance(module, _NORM_TYPES):
                skip.update(id(p) for p in module.parameters(recurse=False))
            elif isinstance(module, nn.Linear) and module.bias is not None:
                skip.add(id(module.bias))
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if id(p) in skip else decay).append(p)
    return decay, no_decay


def optimizer_weight_decay(wd: float, wd_mode: str) -> float:
    """The ``weight_decay`` hyper-parameter to give the torch optimizer for ``wd`` under ``wd_mode``."""
    check_wd_mode(wd_mode)
    return {"decoupled": wd, "l2": 2.0 * wd, "l2-loss": 0.0}[wd_mode]


def l2_penalty(params: Iterable[torch.Tensor], wd: float) -> torch.Tensor:
    """The lesson's ``wd * (parameters**2).sum()`` over ``params``."""
    return torch.as_tensor(wd * sum((p * p).sum() for p in params))


def _without_dynamo_guard(method):
    """``method`` as written, without the ``torch._disable_dynamo`` wrapper torch puts around it.

    That wrapper imports ``torch._dynamo`` on its first call, about 2 s in a
    fresh process, which made building the first optimizer cost more than the
    lesson's whole five-epoch fit. The guard only matters while
    ``torch.compile`` traces the call, and no collabkit code builds an
    optimizer inside a compiled function.
    """
    return getattr(method, "__wrapped__", method)


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` (the same class, steps and state) that builds without importing ``torch._dynamo``."""

    add_param_group = _without_dynamo_guard(torch.optim.AdamW.add_param_group)


class AdamL2(torch.optim.Adam):
    """``torch.optim.Adam`` (gradient-form weight decay) that builds without importing ``torch._dynamo``."""

    add_param_group = _without_dynamo_guard(torch.optim.Adam.add_param_group)


def Adam(  # noqa: N802 - the lesson's (fastai's) name
    params: Iterable,
    lr: float = 1e-3,
    mom: float = 0.9,
    sqr_mom: float = 0.99,
    eps: float = 1e-5,
    wd: float = 0.0,
    decouple_wd: bool = True,
) -> torch.optim.Optimizer:
    """Adam with fastai's defaults: betas ``(0.9, 0.99)``, eps ``1e-5``.

    ``decouple_wd=True`` returns ``torch.optim.AdamW`` (``p -= lr·wd·p``);
    ``False`` returns ``torch.optim.Adam``, whose ``weight_decay`` adds
    ``wd·p`` to the gradient (both as the subclasses above, which only build
    faster). The fused kernel is used where torch has one.
    """
    cls = AdamW if decouple_wd else AdamL2
    params = list(params)
    try:
        return cls(params, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return cls(params, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd, foreach=True)
