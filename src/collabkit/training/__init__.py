"""Learner: fit, fit_one_cycle, lr_find, weight decay, callbacks."""

from collabkit.training.callbacks import (
    Callback,
    CancelFitException,
    EarlyStoppingCallback,
    ProgressCallback,
    SaveModelCallback,
)
from collabkit.training.learner import Learner
from collabkit.training.losses import MSELossFlat
from collabkit.training.lr_find import LRFinderResult
from collabkit.training.optim import WD_MODES, Adam
from collabkit.training.recorder import Recorder
from collabkit.training.schedule import one_cycle

__all__ = [
    "WD_MODES",
    "Adam",
    "Callback",
    "CancelFitException",
    "EarlyStoppingCallback",
    "LRFinderResult",
    "Learner",
    "MSELossFlat",
    "ProgressCallback",
    "Recorder",
    "SaveModelCallback",
    "one_cycle",
]
