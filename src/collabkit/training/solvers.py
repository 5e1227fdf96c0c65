"""The ways to fit a rating model, behind one protocol and one registry.

A solver turns the shared recipe (:class:`~collabkit.training.recipe.TrainConfig`)
into frozen settings of its own, builds the model it fits, and fits it on a
:class:`~collabkit.training.Learner`, which is the context every solver shares:
the data, the recorder, the callbacks (:meth:`Learner.fitting`,
:meth:`Learner.after_epoch`) and the validation (:meth:`Learner.validate_or_nan`).

A new solver is one file with its settings class and a :class:`Solver`, and one
line in :data:`SOLVERS`; the CLI's ``--solver`` choices, the refusal of options
it does not read, ``train``, ``cv`` and the estimators pick it up from there.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from torch import nn

from collabkit.training.bayes import GIBBS
from collabkit.training.bayes_svdpp import SVDPP
from collabkit.training.sgd import SGD
from collabkit.training.sparse import ROW_SPARSE

if TYPE_CHECKING:
    from collabkit.training.learner import Learner
    from collabkit.training.recipe import TrainConfig


class Solver(Protocol):
    """What every solver provides."""

    @property
    def name(self) -> str: ...

    @property
    def settings_class(self) -> type:
        """A frozen dataclass of the solver's own settings, with its own defaults."""
        ...

    @property
    def renamed(self) -> dict[str, str]:
        """Settings read from a :class:`TrainConfig` field of another name (``{"reg": "wd"}``)."""
        ...

    @property
    def resumable(self) -> bool:
        """Whether it writes checkpoints and can resume from one (then it is also a :class:`Resumes`)."""
        ...

    @property
    def multiprocess(self) -> bool:
        """Whether it trains in several processes (``--nproc``, torchrun)."""
        ...

    def build_model(self, settings: Any, n_users: int, n_items: int, ratings: np.ndarray) -> nn.Module:
        """The model it fits, sized for the vocabularies (``ratings``: the training ratings)."""
        ...

    def learner_options(self, settings: Any) -> dict[str, Any]:
        """Keyword arguments for the :class:`Learner` (the SGD solver's lr, wd, wd_mode)."""
        ...

    def fit(self, learn: Learner, settings: Any, seed: int, lr: float | None = None, checkpoint=None) -> None:
        """Fit ``learn.model`` (``lr``: a learning rate found by ``lr_find``, where the solver has one)."""
        ...


@runtime_checkable
class Resumes(Protocol):
    """What a solver with ``resumable = True`` provides besides :class:`Solver`'s methods."""

    def resume(self, learn: Learner, settings: Any, seed: int, checkpoint) -> None:
        """Continue the run saved in ``checkpoint`` (written by :meth:`Solver.fit`), writing further ones there."""
        ...


SOLVERS: dict[str, Solver] = {
    "sgd": SGD,  # the lesson's: fit_one_cycle with dense AdamW (training/sgd.py)
    "bayes": GIBBS,  # Bayesian PMF by Gibbs sampling (training/bayes.py)
    "bayes-svdpp": SVDPP,  # Bayesian SVD++ by Gibbs sampling, slower and more accurate (training/bayes_svdpp.py)
    "sparse": ROW_SPARSE,  # row-wise Adagrad for large data (training/sparse.py)
}

VALIDATION_BS = 1024
"""Batch size of the loaders of a solver whose settings have no ``bs`` (they only validate)."""


def _option_fields(solver: Solver) -> list[tuple[str, str]]:
    """``(settings field, TrainConfig field)`` of every option ``solver``'s settings class reads."""
    return [(f.name, solver.renamed.get(f.name, f.name)) for f in dataclasses.fields(solver.settings_class)
            if f.metadata.get("option", True)]


def options(solver: Solver) -> tuple[str, ...]:
    """The :class:`TrainConfig` fields ``solver`` reads."""
    return tuple(option for _, option in _option_fields(solver))


def settings_from(solver: Solver, config: TrainConfig) -> Any:
    """``solver``'s frozen settings: the fields ``config`` sets, the solver's defaults for the rest."""
    given = {name: getattr(config, option) for name, option in _option_fields(solver)}
    return solver.settings_class(**{name: value for name, value in given.items() if value is not None})


def record(solver: Solver, settings: Any) -> dict[str, Any]:
    """The settings under the :class:`TrainConfig` names, as a model's info records them."""
    return {option: getattr(settings, name) for name, option in _option_fields(solver)}


def batch_size(settings: Any) -> int:
    return getattr(settings, "bs", VALIDATION_BS)
