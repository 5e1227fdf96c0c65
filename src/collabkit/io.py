"""Save and load a trained model as a directory, with no pickle anywhere.

A model directory holds these files::

    model.safetensors        the rating model's weights (safetensors: tensors only,
                             no code); absent for implicit feedback, which has none
    config.json              format version, model and ranker classes and their
                             constructor arguments, column names, and what the
                             training run recorded
    vocab.json               the raw user and item ids in row order, and item titles
    history.safetensors      optional: who rated what, for top-N and fallbacks
                             (see :class:`~collabkit.data.history.RatingHistory`)
    ranker.safetensors       optional: the ranking model's weights (EASE, iALS, ...)
    interactions.safetensors with the ranker: the training interactions it scores
                             users from (see :mod:`collabkit.data.interactions`)

Format version 2 added the ranker and made the rating model optional; version
1 directories (a rating model only) load as before.

:func:`save_model` writes into a temporary sibling directory and renames it
into place only when every file is complete, so a failed save leaves any
previous model untouched and never a half-written one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from collabkit.data.history import RatingHistory, is_csr
from collabkit.data.interactions import Interactions
from collabkit.data.vocab import Vocabulary
from collabkit.errors import ConfigError, ModelFileError
from collabkit.models.factors import RatingModel
from collabkit.models.ranker import Ranker
from collabkit.models.registry import RANKERS, RATING_MODELS

FORMAT = "collabkit-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS, CONFIG, VOCAB, HISTORY = "model.safetensors", "config.json", "vocab.json", "history.safetensors"
RANKER, INTERACTIONS = "ranker.safetensors", "interactions.safetensors"
FILES = (WEIGHTS, CONFIG, VOCAB, HISTORY, RANKER, INTERACTIONS)

MODEL_CLASSES = RATING_MODELS  # the name older code imported


@dataclass
class LoadedModel:
    """What :func:`load_model` returns: the rebuilt model (in eval mode) and its metadata."""

    model: nn.Module | None
    users: Vocabulary
    items: Vocabulary
    columns: dict[str, str]
    titles: list[str | None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    history: RatingHistory | None = None
    ranker: Ranker | None = None
    interactions: Interactions | None = None


def _model_class_name(model: nn.Module) -> str:
    for klass in type(model).__mro__:
        for name, registered in MODEL_CLASSES.items():
            if klass is registered:
                return name
    raise ModelFileError(
        f"cannot save a {type(model).__name__}: only collabkit's built-in models "
        f"({', '.join(MODEL_CLASSES)}) can be rebuilt from a config file"
    )


def _ranker_name(ranker: Ranker) -> str:
    for name, klass in RANKERS.items():
        if type(ranker) is klass:
            return name
    raise ModelFileError(f"cannot save a {type(ranker).__name__}: it is not in collabkit's ranker registry")


def _write_json(path: Path, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, ensure_ascii=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _is_replaceable(path: Path) -> bool:
    """Only an empty directory or a previous collabkit model may be replaced: one whose config.json says
    ``"format": "collabkit-model"`` (a truncated one must still say so) and that holds nothing but a model's
    files (a Hugging Face folder has a config.json and a model.safetensors too)."""
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    if not entries:
        return True
    if not set(e.name for e in entries) <= set(FILES) or not (path / CONFIG).is_file():
        return False
    try:
        raw = (path / CONFIG).read_bytes()
        config = json.loads(raw)
    except OSError:
        return False
    except (ValueError, RecursionError):  # a truncated write of our own config still names our format
        return f'"format": "{FORMAT}"'.encode() in raw
    return isinstance(config, dict) and config.get("format") == FORMAT


def check_writable(path: str | Path) -> Path:
    """Raise :class:`ModelFileError` unless :func:`save_model` may write ``path`` (absent, empty, or a
    collabkit model): for commands to check their output before they spend time training."""
    path = Path(path)
    if path.exists() and not _is_replaceable(path):
        raise ModelFileError(f"{str(path)!r} exists and is not a collabkit model directory; refusing to overwrite it")
    _check_parent(path)
    return path


def check_output_file(path: str | Path) -> Path:
    """Raise :class:`ModelFileError` unless a file can be written at ``path``: not a directory, and its folder
    exists or can be made. For commands to check an output (a checkpoint, a CSV) before the work."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{str(path)!r} is a directory; give a file path")
    _check_parent(path)
    return path


def _check_parent(path: Path) -> None:
    """The nearest existing folder above ``path`` must be a writable directory (not a file)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ModelFileError(f"cannot write {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModelFileError(f"cannot write {str(path)!r}: no permission to write in {str(parent)!r}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_model(
    path: str | Path,
    model: nn.Module | None,
    users: Vocabulary,
    items: Vocabulary,
    columns: dict[str, str],
    titles: list[str | None] | None = None,
    info: dict[str, Any] | None = None,
    history: RatingHistory | None = None,
    ranker: Ranker | None = None,
    interactions: Interactions | None = None,
) -> Path:
    """Write ``model`` and its vocabularies to the directory ``path``, atomically.

    Args:
        path: the model directory; an existing collabkit model there is replaced.
        model: a built-in rating model (``DotProduct``, ``DotProductBias``, ``EmbeddingNN``),
            or ``None`` for a ranking-only model (implicit feedback).
        users, items: the vocabularies whose rows the model's tables follow.
        columns: ``{"user": ..., "item": ..., "rating": ...}`` column names.
        titles: optional title per item row.
        info: anything JSON-serialisable to keep with the model (data, epochs, metrics).
        history: who rated what (for ``exclude_seen`` and unknown-id fallbacks).
        ranker: a fitted ranking model (see :mod:`collabkit.models.registry`).
        interactions: the training interactions (required with a ranker, which scores users from
            them; with a rating model alone they let ``evaluate`` refuse a split that overlaps training
            and a ranker be fitted later).

    Returns:
        The directory written.
    """
    path = check_writable(path)
    if model is None and ranker is None:
        raise ConfigError("nothing to save: give a rating model, a ranker, or both")
    if ranker is not None and interactions is None:
        raise ConfigError("a ranker is saved with the interactions it scores users from: give them too")
    class_name = None if model is None else _model_class_name(model)
    ranker_name = None if ranker is None else _ranker_name(ranker)
    if titles is not None and len(titles) != len(items):
        raise ConfigError(f"titles must give one entry per item ({len(items)}), got {len(titles)}")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": None if model is None else {"class": class_name, "config": cast(RatingModel, model).config()},
        "ranker": None if ranker is None else {"class": ranker_name, "config": ranker.config()},
        "interactions": interactions is not None,
        "columns": dict(columns),
        "info": info or {},
        "history": None if history is None else {"global_mean": history.global_mean},
    }
    vocab = {"users": users.to_list(), "items": items.to_list(), "titles": titles}
    tensors = None if model is None else {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving-", dir=path.parent))
    try:  # mkdtemp makes it 700: a replaced model keeps the old mode, a new one follows the umask
        os.chmod(staging, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o777 & ~_umask())
        if tensors is not None:
            save_file(tensors, str(staging / WEIGHTS), metadata={"format": "pt"})
        if ranker is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ranker.state().items()}, str(staging / RANKER))
        if interactions is not None:
            save_file(interactions.to_tensors(), str(staging / INTERACTIONS))
        _write_json(staging / CONFIG, config)
        _write_json(staging / VOCAB, vocab)
        if history is not None:
            save_file(history.to_tensors(), str(staging / HISTORY))
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, retired / "model")
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelFileError(f"{str(path.parent)!r} is not a collabkit model directory: {path.name} is missing")
    try:
        with open(path, encoding="utf-8") as fh:
            payload = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{str(path)!r} is corrupt: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise ModelFileError(f"{str(path)!r} is corrupt: nested too deeply to read") from exc
    if not isinstance(payload, dict):
        raise ModelFileError(f"{str(path)!r} is corrupt: expected a JSON object")
    return payload


def load_model(path: str | Path) -> LoadedModel:
    """Rebuild a model saved by :func:`save_model`; weights load without running any code.

    Raises:
        ModelFileError: the directory or a file is missing, corrupt, from an
            unknown format version, or inconsistent with the others.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"no model directory at {str(path)!r}")
    config = _read_json(path / CONFIG)
    vocab = _read_json(path / VOCAB)
    if config.get("format") != FORMAT:
        raise ModelFileError(f"{str(path / CONFIG)!r} is not a collabkit model config (format={config.get('format')!r})")
    if config.get("format_version") not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{str(path)!r} has model format version {config.get('format_version')!r}; "
            f"this collabkit reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        users = Vocabulary(vocab["users"], name=config["columns"]["user"])
        items = Vocabulary(vocab["items"], name=config["columns"]["item"])
        spec, ranker_spec = config["model"], config.get("ranker")
        if spec is None and ranker_spec is None:
            raise ConfigError("neither a rating model nor a ranker is named")
        if spec is not None:  # before anything is built: a config can ask for gigabytes the file does not hold
            _check_dimensions(path, spec["config"], _header_shapes(path / WEIGHTS))
        model = None if spec is None else RATING_MODELS[spec["class"]](**spec["config"])
        ranker = None if ranker_spec is None else RANKERS[ranker_spec["class"]](**ranker_spec["config"])
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # (torch's constructors raise RuntimeError)
        first = (str(exc).strip().splitlines() or [""])[0]  # never torch's C++ frames
        raise ModelFileError(f"{str(path)!r} has an inconsistent config or vocabulary: {type(exc).__name__}: "
                             f"{first}") from exc
    if model is not None:
        _load_weights(path, model, len(users), len(items))
    interactions = None
    if ranker is not None:
        ranker.load_state(_read_tensors(path / RANKER), len(users), len(items))
    if ranker is not None or config.get("interactions"):
        interactions = _load_interactions(path, len(users), len(items))
    titles = vocab.get("titles")
    if titles is not None and (not isinstance(titles, list) or len(titles) != len(items)):
        raise ModelFileError(f"{str(path / VOCAB)!r}: the titles are not a list of one per item ({len(items)})")
    columns, info = config.get("columns"), config.get("info", {})
    if not (isinstance(columns, dict) and all(isinstance(v, str) for v in columns.values()) and isinstance(info, dict)):
        raise ModelFileError(f"{str(path / CONFIG)!r}: 'columns' must map names to strings and 'info' be an object")
    _check_rating_scale(path, info.get("rating_scale"))
    history = _load_history(path, config, len(users), len(items))
    return LoadedModel(
        model, users, items, dict(config["columns"]), titles, dict(config.get("info", {})), history, ranker, interactions
    )


def _check_rating_scale(path: Path, scale: Any) -> None:
    """``info.rating_scale`` (what predictions are clipped to, and fold-in ratings checked against): absent,
    or two finite numbers, low <= high."""
    if scale is None:
        return
    ok = isinstance(scale, list) and len(scale) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in scale)
    if not (ok and scale[0] <= scale[1]):
        raise ModelFileError(f"{str(path / CONFIG)!r}: info.rating_scale must be [low, high], two finite numbers "
                             f"with low <= high, got {scale!r}")


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a safetensors file, read from its header alone (nothing is loaded)."""
    if not path.is_file():
        raise ModelFileError(f"{str(path.parent)!r} is not a collabkit model directory: {path.name} is missing")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{str(path)!r} is corrupt: {exc}") from exc


def _check_dimensions(path: Path, config: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every size a model config names (its integers) must be the length of some axis of a stored tensor."""
    axes = {n for shape in shapes.values() for n in shape}

    def sizes(value: Any):
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from sizes(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from sizes(v)

    stray = sorted({n for n in sizes(config) if n > 1 and n not in axes})
    if stray:
        raise ModelFileError(
            f"{str(path / WEIGHTS)!r} does not match its config: {CONFIG} names sizes {stray[:5]} that no tensor "
            "there has"
        )


def _read_tensors(path: Path) -> dict:
    if not path.is_file():
        raise ModelFileError(f"{str(path.parent)!r} is not a collabkit model directory: {path.name} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{str(path)!r} is corrupt: {exc}") from exc


def _load_interactions(path: Path, n_users: int, n_items: int) -> Interactions:
    try:
        interactions = Interactions.from_tensors(_read_tensors(path / INTERACTIONS))
    except (KeyError, IndexError, ValueError) as exc:
        raise ModelFileError(f"{str(path / INTERACTIONS)!r} is corrupt: {exc!r}") from exc
    if interactions.n_users != n_users or interactions.n_items != n_items:
        raise ModelFileError(f"{str(path / INTERACTIONS)!r} does not match vocab.json ({n_users} users, {n_items} items)")
    return interactions


def _load_weights(path: Path, model: nn.Module, n_users: int, n_items: int) -> None:
    """Fill ``model`` from model.safetensors, checking its tables against the vocabularies."""
    weights_path = path / WEIGHTS
    tensors = _read_tensors(weights_path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise ModelFileError(f"{str(weights_path)!r} does not match its config: {' '.join(first)}") from exc
    n_rows = {k: v.shape[0] for k, v in tensors.items() if k.endswith("weight") and v.ndim == 2}
    tables = type(cast(RatingModel, model)).ID_TABLES
    expected = {tables["user"]: n_users, tables["item"]: n_items}
    for key, rows in expected.items():
        if n_rows.get(key) != rows:
            raise ModelFileError(
                f"{str(path)!r}: {key} has {n_rows.get(key)} rows but vocab.json lists {rows} ids"
            )
    model.eval()


def _load_history(path: Path, config: dict, n_users: int, n_items: int) -> RatingHistory | None:
    history_path = path / HISTORY
    if config.get("history") is None:
        return None
    if not history_path.is_file():
        raise ModelFileError(f"{str(path)!r}: config.json records a rating history but {HISTORY} is missing")
    try:
        history = RatingHistory.from_tensors(load_file(str(history_path)), config["history"]["global_mean"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{str(history_path)!r} is corrupt: {exc!r}") from exc
    if (
        len(history.indptr) != n_users + 1
        or len(history.item_trained) != n_items
        or len(history.user_trained) != n_users
        or not is_csr(history.indptr, history.indices, n_items)
        or (history.item_counts < 0).any()
    ):
        raise ModelFileError(f"{str(history_path)!r} does not match vocab.json ({n_users} users, {n_items} items)")
    return history
