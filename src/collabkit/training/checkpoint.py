"""Training checkpoints: everything needed to continue a run, written atomically, read without pickle.

A checkpoint is one file made by ``torch.save`` of plain containers and
tensors (weights, optimizer and scheduler state, the shuffling generator, the
history), and read back with ``torch.load(weights_only=True)``, which refuses
anything that would run code. It is written to a temporary file beside the
target and renamed over it, so an interruption leaves the previous checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
from pathlib import Path

import torch

from collabkit.errors import ConfigError, ModelFileError

CHECKPOINT_FORMAT = "collabkit-checkpoint-1"


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, solver: str | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing or corrupt file names itself, and so
    does one of another solver than ``solver`` (when given)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
        raise ModelFileError(f"checkpoint {str(path)!r} is corrupt or not a collabkit checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{str(path)!r} is not a {CHECKPOINT_FORMAT} checkpoint")
    kind = state.get("solver", "sgd")  # (sgd checkpoints had no "solver" at first)
    if solver is not None and kind != solver:
        raise ModelFileError(f"{str(path)!r} is a checkpoint of the {kind} solver, not of --solver {solver}")
    return state


def run_state(learn, solver: str, epochs_done: int, n_epoch: int, **parts) -> dict:
    """A checkpoint of ``learn``'s run by ``solver``: what every solver's checkpoint holds (the epochs, the
    training rows' fingerprint, the shuffling generator, the history) and the solver's own ``parts``."""
    generator = learn.dls.train.generator
    return {
        "format": CHECKPOINT_FORMAT,
        "solver": solver,
        "epochs_done": epochs_done,
        "n_epoch": n_epoch,
        "data": data_fingerprint(learn.dls.train),
        "generator": generator.get_state() if generator is not None else None,
        "recorder": dataclasses.asdict(learn.recorder),
        **parts,
    }


def restore_run(learn, state: dict) -> int:
    """Put ``state``'s shuffling generator and history back into ``learn``; the number of epochs done.
    (The solver restores its own parts, after :func:`check_same_data`.)"""
    from collabkit.training.recorder import Recorder

    generator = learn.dls.train.generator
    if state["generator"] is not None and generator is not None:
        generator.set_state(state["generator"])
    learn.recorder = Recorder.from_dict(state["recorder"])
    return int(state["epochs_done"])


def data_fingerprint(train) -> dict:
    """What a checkpoint records of its training rows (a loader's ``x``, ``y``): their count and sums, which
    another ``--seed``, split or file changes."""
    x, y = train.x.cpu(), train.y.cpu()
    return {"rows": int(len(y)), "users": int(x[:, 0].long().sum()), "items": int(x[:, 1].long().sum()),
            "ratings": float(y.double().sum())}


def check_same_data(state: dict, train) -> None:
    """Refuse to resume ``state`` on training rows other than its own (checkpoints without a record pass)."""
    saved = state.get("data")
    if saved is not None and saved != data_fingerprint(train):
        raise ConfigError(
            f"the checkpoint was trained on other rows ({saved['rows']:,} training ratings, now "
            f"{len(train.y):,}, or the same number split differently); resume with the same --data, --seed and "
            "split options"
        )
