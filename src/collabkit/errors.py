"""The errors collabkit raises for problems a user can fix.

Every error here is a subclass of a built-in exception (``ValueError``,
``KeyError``, ``RuntimeError``) so callers can catch it the usual way, and of
:class:`CollabkitError` so the command line can turn it into one line of text.
Messages name the argument or file, what was expected and what came in.
"""

from __future__ import annotations


class CollabkitError(Exception):
    """Base class of every user-facing collabkit error."""


class ConfigError(CollabkitError, ValueError):
    """A setting or argument collabkit cannot use (a size that is not positive, an unknown name, a
    split share outside 0..1, ...); the message names it and what would work."""


class DataError(CollabkitError, ValueError):
    """The ratings table cannot be used as given (missing column, NaN rating, ...)."""


class UnknownIdError(CollabkitError, KeyError):
    """A user or item id that the model's vocabulary does not contain."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


class ModelFileError(CollabkitError, ValueError):
    """A saved model directory is missing, corrupt or inconsistent."""


class DatasetNotFoundError(CollabkitError, FileNotFoundError):
    """A named dataset whose files cannot be found locally."""


class TrainingDivergedError(CollabkitError, RuntimeError):
    """The loss became NaN or infinite during training."""


class NotFittedError(CollabkitError, RuntimeError):
    """An operation that needs a trained model was called before fit."""
