"""The ``collabkit`` command. This is the only module that parses arguments or prints.

    collabkit train --data ml-latest-small --out runs/demo
    collabkit train --data ml-100k --data-dir ~/data --epochs 5 --lr 5e-3 --wd 0.1
    collabkit train --data ratings.csv --user-col uid --item-col iid --rating-col stars
    collabkit predict --model runs/demo --user 1 --item 318
    collabkit recommend --model runs/demo --user 1 -n 10
    collabkit recommend --model runs/demo --ratings my_ratings.csv
    collabkit similar --model runs/demo --item "Toy Story (1995)"
    collabkit explain --model runs/demo --plots runs/demo-plots

A user error prints one line, ``collabkit: error: ...``, and exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from collabkit import __version__, distributed
from collabkit import datasets as datasets_mod
from collabkit.data import CollabDataLoaders, read_ratings_file
from collabkit.data.ratings import DUPLICATE_POLICIES, LINE_OFFSET, check_rating_scale
from collabkit.data.splits import ML_100K_SPLITS, SPLIT_KINDS, SplitSpec
from collabkit.datasets import (
    REGISTRY,
    SYNTHETIC_PREFIX,
    Dataset,
    load_dataset,
    split_dataset,
    synthetic_dataset,
)
from collabkit.errors import CollabkitError
from collabkit.evaluate import cross_validate, evaluate, summarise
from collabkit.io import check_output_file, check_writable
from collabkit.metrics import mae, rmse
from collabkit.models import DotProductBias
from collabkit.models.registry import RANKERS
from collabkit.recommend import RANK_BY, Recommender
from collabkit.training import WD_MODES, ProgressCallback
from collabkit.training.recipe import MODELS, PRESETS, SOLVERS, TrainConfig, fit, prepare, resume
from collabkit.training.solvers import options as solver_options

log = logging.getLogger("collabkit")

SPLITS = (*SPLIT_KINDS, *ML_100K_SPLITS)
FEEDBACK = ("auto", "explicit", "implicit")
WEIGHT_NAMES = ("count", "counts", "plays", "playcount", "play_count", "clicks", "weight", "weights", "quantity",
                "views", "listens")
"""A third column with one of these names holds implicit feedback's counts, not ratings (``--feedback auto``)."""


class CliError(CollabkitError):
    """A problem with the command line itself."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _separator(text: str) -> str:
    """--sep: one character; a tab may be written as \\t or tab, as a shell passes them."""
    sep = {"\\t": "\t", "tab": "\t"}.get(text, text)
    if len(sep) != 1:
        raise argparse.ArgumentTypeError(f"must be one character such as ';' or \\t, got {text!r}")
    return sep


def _add_sep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sep", type=_separator, metavar="CHAR",
                        help="the column separator of the text files given (default: comma for .csv, sniffed "
                        "otherwise); \\t for tabs")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``collabkit: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="collabkit",
        description="Collaborative filtering: train rating models, save them, ask them questions.",
    )
    parser.add_argument("--version", action="version", version=f"collabkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train",
        help="train a model on a ratings table and report validation RMSE/MAE",
        description="Train a model, print the epoch table, validation RMSE and MAE and a few predictions, "
        "and optionally save the model (safetensors + JSON) with --out. Unset training options come from --preset.",
    )
    _add_data_options(train)
    _add_split_options(train)
    _add_train_options(train)
    train.add_argument("--lr-find", action="store_true", help="run the lr finder first; without --lr, train at its suggestion")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--checkpoint", type=Path, help="write a checkpoint here after every epoch")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint")
    train.add_argument("--nproc", type=_positive_int, default=1,
                       help="worker processes on this machine (torch.distributed via torchrun; --bs is the global batch)")
    train.add_argument("--backend", choices=("gloo", "nccl"), help="distributed backend (default: nccl on CUDA, else gloo)")
    train.add_argument("--out", type=Path, help="save the trained model to this directory")
    train.add_argument("--show", type=int, default=8, help="how many validation predictions to print")

    evaluate = commands.add_parser(
        "evaluate",
        help="rating and ranking metrics of a saved model on a held-out split",
        description="Evaluate a saved model on the test part of a split: RMSE, MAE, and precision, recall, NDCG, "
        "MAP, hit rate, MRR and coverage at k. Use the same --data/--split/--seed the model was trained with.",
    )
    evaluate.add_argument("--model", type=Path, required=True, help="a model directory written by train --out")
    _add_data_options(evaluate)
    _add_split_options(evaluate, replayed=True)
    evaluate.add_argument("--test", type=Path, metavar="FILE",
                          help="score on this file of held-out ratings (columns named as in training, else the "
                          "first three) instead of a split of --data: for a model trained on everything")
    evaluate.add_argument("--allow-overlap", action="store_true",
                          help="score test ratings the model trained on (refused by default: the figures would flatter)")
    _add_metric_options(evaluate)

    cv = commands.add_parser(
        "cv",
        help="k-fold cross-validation: mean and std of every metric over the folds",
        description="Train and evaluate on each of --folds random folds; print each fold and the mean and "
        "standard deviation of every metric, with the fit time per fold.",
    )
    _add_data_options(cv)
    cv.add_argument("--folds", type=_positive_int, default=5, help="number of folds")
    cv.add_argument("--seed", type=int, default=42, help="seed of the fold assignment")
    cv.set_defaults(split=None, valid_pct=None, holdout=None)
    _add_train_options(cv)
    _add_metric_options(cv)

    _add_use_commands(commands)
    _add_serve_command(commands)

    data_cmd = commands.add_parser(
        "datasets", help="list, describe, download or add named datasets",
        description="Named MovieLens datasets, cached under $COLLABKIT_HOME (default ~/.cache/collabkit).",
    )
    actions = data_cmd.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    actions.add_parser("list", help="every known dataset, its size and license, and whether it is here")
    for action, text in (("info", "everything known about one dataset"), ("download", "download and unpack one")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("name", help="a dataset name (see: collabkit datasets list)")
    add = actions.add_parser("add", help="use a copy you already have: a downloaded zip or an unpacked folder")
    add.add_argument("name")
    add.add_argument("path", type=Path)
    return parser


def _add_serve_command(commands) -> None:
    serve = commands.add_parser(
        "serve", help="serve a saved model over HTTP (FastAPI + uvicorn; API docs at /docs)",
        description="Answer recommendation, prediction and similar-item requests for a saved model over HTTP. "
        "Binds to loopback unless --host says otherwise. POST /reload is enabled when $COLLABKIT_RELOAD_TOKEN "
        "is set; --watch reloads when the model directory changes. See docs/serving.md.")
    serve.add_argument("--model", type=Path, required=True, help="a model directory written by train --out")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--workers", type=_positive_int, default=1, help="server processes, one per core")
    serve.add_argument("--watch", type=float, metavar="SECONDS", help="reload when the model directory changes")
    serve.add_argument("--request-timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                       help="a request must arrive whole within this time, else 408 and the connection closes "
                            "(default 10)")


def _add_data_options(sub: argparse.ArgumentParser) -> None:
    data = sub.add_argument_group("data")
    data.add_argument(
        "--data",
        default="ml-latest-small",
        help=f"a dataset name ({', '.join(REGISTRY)}), synthetic:SIZE for planted ratings (e.g. synthetic:10M; "
        "the scaling benchmark's shape), or a CSV/Parquet file of ratings (default ml-latest-small)",
    )
    data.add_argument("--data-dir", help="folder holding the dataset (or its parent); default $COLLABKIT_DATA_DIR")
    data.add_argument("--user-col", help="user id column of a ratings file (default: the first column)")
    data.add_argument("--item-col", help="item id column of a ratings file (default: the second column)")
    data.add_argument("--rating-col", help="rating column of a ratings file (default: the third column)")
    data.add_argument("--title-col", help="item title column of a ratings file, shown beside predictions")
    _add_sep(data)
    data.add_argument(
        "--duplicates", choices=DUPLICATE_POLICIES,
        help="repeated (user, item) pairs (default: error; keep for synthetic data, whose repeats are separate draws "
        "and for implicit feedback, whose repeats add up)",
    )
    data.add_argument(
        "--feedback", choices=FEEDBACK, default="auto",
        help="explicit (ratings) or implicit (plays, clicks, purchases: user and item columns, optionally a count "
        "or weight); default auto: implicit for a file without a third column or whose third column is named like "
        f"a count ({', '.join(WEIGHT_NAMES[:4])}, ...), else explicit",
    )


SPLIT_DEFAULTS = SplitSpec().record()
"""The split options' defaults; ``evaluate`` starts from the split recorded with the model instead."""


def _add_split_options(sub: argparse.ArgumentParser, replayed: bool = False) -> None:
    split = sub.add_argument_group("split")
    default = " (default: the split the model was trained with)" if replayed else ""
    split.add_argument(
        "--split",
        choices=SPLITS,
        help="random (--valid-pct, --seed; the lesson's), temporal (the latest --valid-pct by time), "
        "user-last / user-random (--holdout ratings per user), or an ML-100K canonical split u1..u5, ua, ub "
        f"(default random){default}",
    )
    split.add_argument("--valid-pct", type=float, help=f"share held out (default 0.2){default}")
    split.add_argument("--holdout", type=_positive_int, help=f"ratings held out per user (default 1){default}")
    split.add_argument("--seed", type=int, help=f"seed of the split, the weights and shuffling (default 42){default}")


def _split_defaults(args: argparse.Namespace, recorded: dict | None = None) -> None:
    """Fill the split options the user left unset: from ``recorded`` (a model's info), else the defaults."""
    try:
        spec = SplitSpec.from_record(recorded or {}, kind=args.split, valid_pct=args.valid_pct,
                                     holdout=getattr(args, "holdout", None), seed=args.seed)
    except ValueError as exc:
        raise CliError(str(exc).replace("valid_pct", "--valid-pct").replace("holdout", "--holdout")) from exc
    args.split, args.valid_pct, args.holdout, args.seed = spec.kind, spec.valid_pct, spec.holdout, spec.seed


def _add_train_options(sub: argparse.ArgumentParser) -> None:
    fit = sub.add_argument_group("model and training (unset: from --preset)")
    fit.add_argument("--preset", choices=sorted(PRESETS), default="default",
                     help="named settings: default (Bayesian PMF, fast and accurate), accurate (Bayesian SVD++, "
                     "500 Gibbs sweeps: the most accurate, about half a minute on ML-100K), lesson (the course's "
                     "DotProductBias with fit_one_cycle(5, 5e-3, wd=0.1)) or sparse (row-wise Adagrad for large "
                     "data: 64 factors, 20 epochs, lr 0.05, L2 0.02); default: default")
    fit.add_argument("--solver", choices=tuple(SOLVERS),
                     help="sgd (fit_one_cycle, dense AdamW), bayes (Gibbs sampling), bayes-svdpp (Gibbs sampling "
                          "of Bayesian SVD++, slower and more accurate) or sparse (row-sparse SGD)")
    fit.add_argument("--sweeps", type=_positive_int, help="Gibbs sweeps of the bayes and bayes-svdpp solvers")
    fit.add_argument("--model", choices=MODELS, help="dot product, with biases, or a neural net")
    fit.add_argument("--n-factors", type=_positive_int, help="embedding width")
    fit.add_argument(
        "--y-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
        help="output range; default: 0 (or the lowest rating, if negative) to 10%% above the highest rating",
    )
    fit.add_argument("--layers", type=_positive_int, nargs="+", help="hidden layers of --model nn")
    fit.add_argument("--epochs", type=_positive_int)
    fit.add_argument("--early-stop", type=_positive_int, metavar="PATIENCE", dest="patience",
                     help="sgd: stop when the validation loss has not improved for PATIENCE epochs, and keep the "
                     "best epoch's weights (the epoch is chosen on the validation rows, so their RMSE is optimistic)")
    fit.add_argument("--lr", type=float, help="peak learning rate of the 1cycle schedule")
    fit.add_argument("--wd", type=float, help="weight decay")
    fit.add_argument("--wd-mode", choices=WD_MODES, help="how weight decay is applied")
    fit.add_argument("--bs", type=_positive_int, help="batch size")
    fit.add_argument("--threads", type=_positive_int, help="torch intra-op threads (1 is fastest at small bs)")
    fit.add_argument("--ranker", choices=("auto", *RANKERS, "none"), default="auto",
                     help="the ranking model fitted beside the rating model, which ranks recommend, similar and new "
                     "users: ease (item-item, closed form), ials (implicit ALS, for large catalogues), popular, none; "
                     "default auto: ease when its items x items matrix fits, else ials")


def _add_metric_options(sub: argparse.ArgumentParser) -> None:
    metrics = sub.add_argument_group("metrics")
    metrics.add_argument("--k", type=_positive_int, default=10, help="cut-off of the ranking metrics (default 10)")
    metrics.add_argument("--threshold", type=float, default=4.0, help="a test rating this high is relevant (default 4)")
    metrics.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    _add_rank_by(metrics)


def _add_rank_by(sub) -> None:
    sub.add_argument("--rank-by", choices=RANK_BY,
                     help="ranking: the ranking model (default when the model has one); rating: highest predicted "
                     "rating first, the lesson's way")


def _add_use_commands(commands) -> None:
    """The commands that ask a saved model questions."""

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        sub.add_argument("--model", type=Path, required=True, help="a model directory written by train --out")
        sub.add_argument("--json", action="store_true", help="print JSON records instead of a table")
        return sub

    predict = command("predict", "predict ratings for (user, item) pairs")
    predict.add_argument("--user", help="a user id")
    predict.add_argument("--item", help="an item id or title")
    predict.add_argument("--pairs", type=Path, help="a CSV of pairs (columns named as in training, or the first two)")
    predict.add_argument("--output", type=Path, help="write the predictions to this CSV file (default with --pairs: stdout)")
    predict.add_argument("--strict", action="store_true", help="fail on ids the model never trained on")
    _add_sep(predict)

    recommend = command("recommend", "recommend the top items for users, or for a new user's ratings")
    recommend.add_argument("--user", nargs="+", help="one or more user ids")
    recommend.add_argument("--ratings", type=Path,
                           help="someone new: a CSV of their items and ratings (columns named as in training, else the "
                           "first two), or of items alone for the ranking model")
    recommend.add_argument("-n", type=_positive_int, default=10, help="how many items per user")
    _add_sep(recommend)
    recommend.add_argument("--include-seen", action="store_true", help="keep items the user has already rated")
    recommend.add_argument("--min-ratings", type=_non_negative_int, default=0,
                           help="only recommend items with at least this many training ratings (default 0)")
    _add_rank_by(recommend)

    similar = command("similar", "list the items (or users) most similar to one, by the ranking model or the factors")
    similar.add_argument("--item", help="an item id or title")
    similar.add_argument("--user", help="a user id")
    similar.add_argument("-n", type=_positive_int, default=10, help="how many to list")
    similar.add_argument("--min-ratings", type=_non_negative_int, default=0,
                         help="only list items with at least this many training ratings (minimum support; default 0)")
    _add_rank_by(similar)

    explain = command("explain", "show the learned item biases and the main axes of taste, and draw plots")
    explain.add_argument("--plots", type=Path, help="write PNG plots to this directory")
    explain.add_argument("-n", type=_positive_int, default=10, help="items per table")


def _duplicates(args: argparse.Namespace) -> str:
    """The --duplicates policy: as given, else keep for synthetic data (its repeats are draws) and error otherwise."""
    return args.duplicates or ("keep" if args.data.startswith(SYNTHETIC_PREFIX) else "error")


def _load_table(args: argparse.Namespace) -> Dataset:
    """A named dataset, or a ratings file with the columns the flags name."""
    path = Path(args.data)
    if args.data.startswith(SYNTHETIC_PREFIX):
        try:
            dataset, _ = synthetic_dataset(args.data, seed=args.seed)
        except ValueError as exc:
            raise CliError(f"--data {args.data}: {exc}") from exc
        return dataset
    if args.data in REGISTRY and not path.is_file():
        return load_dataset(args.data, args.data_dir)
    if not path.exists():
        raise CliError(f"--data {args.data!r} is neither a dataset name ({', '.join(REGISTRY)}) nor an existing file")
    frame = read_ratings_file(path, args.sep)
    columns = list(frame.columns)
    user = args.user_col or (columns[0] if columns else "")
    item = args.item_col or (columns[1] if len(columns) > 1 else "")
    rating = args.rating_col or (columns[2] if len(columns) > 2 else "")
    titles = pd.Series(dtype=object)
    if args.title_col:
        if args.title_col not in frame.columns:
            raise CliError(f"--title-col {args.title_col!r} not found; the file has columns {columns}")
        if item not in frame.columns:  # titles are keyed by item: say so here, as validate_ratings would later
            raise CliError(f"item column {item!r} not found; the table has columns {columns}")
        titles = frame.drop_duplicates(item).set_index(item)[args.title_col]
    return Dataset(path.name, frame, user, item, rating, titles)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CliError(f"--device {name!r} is not a device torch knows ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name} asked for CUDA, but torch sees no GPU here")
    return device


TRAIN_OPTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("solver", "seed", "threads"))
"""The solvers' options, as TrainConfig names them (those with a flag are attributes of the parsed arguments)."""
_FLAGS = {"patience": "--early-stop"}
GIBBS_SOLVERS = ("bayes", "bayes-svdpp")
"""The Gibbs samplers: options they do not read (SGD's) switch a preset of theirs to the lesson's."""


def _speaks(args: argparse.Namespace) -> bool:
    """Whether this process prints train's notes: a single process, or rank 0 of the workers (not the
    ``--nproc`` launcher, whose rank 0 will say them)."""
    if distributed.launched_by_torchrun():
        return int(os.environ.get("RANK", "0")) == 0
    return getattr(args, "nproc", 1) == 1


def _flag(name: str) -> str:
    """The command-line flag of a TrainConfig option."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _config(args: argparse.Namespace) -> TrainConfig:
    """The preset, with every option the user set on top; an option the solver would ignore is refused."""
    base = PRESETS[args.preset]
    given = [name for name in TRAIN_OPTIONS if getattr(args, name, None) is not None]
    reads = {name: solver_options(solver) for name, solver in SOLVERS.items()}
    if args.solver is None and base.solver in GIBBS_SOLVERS and set(given) - set(reads[base.solver]):
        base = PRESETS["lesson"]  # asking for SGD settings means the SGD solver, from the lesson's settings
        if not getattr(args, "json", False) and _speaks(args):  # (stdout is JSON then)
            print(f"note: {', '.join(map(_flag, given))} given: training the lesson's "
                  f"model with SGD (--preset lesson); the {args.preset} preset's Gibbs sampler has no such options")
    elif args.solver is not None and args.solver != base.solver:
        base = TrainConfig(solver=args.solver, seed=base.seed, threads=base.threads)  # that solver's own defaults
    solver = args.solver or base.solver
    burn_in = getattr(base.settings(), "burn_in", None) if base.solver == solver else None
    if args.sweeps is not None and burn_in is not None and args.sweeps <= burn_in:
        raise CliError(f"--sweeps {args.sweeps} leaves no samples: this preset's sampler discards its first "
                       f"{burn_in} sweeps (burn-in); give --sweeps above {burn_in}")
    stray = [name for name in given if name not in reads[solver]]
    if stray:
        users = [k for k, names in reads.items() if stray[0] in names]
        raise CliError(f"{', '.join(map(_flag, stray))} does not apply to the {solver} solver; leave it out or choose "
                       f"--solver {' or '.join(users)}")
    try:
        options = {name: getattr(args, name) for name in given}
        options.update({k: tuple(options[k]) for k in ("layers", "y_range") if k in options})  # (argparse's lists)
        return base.replace(solver=args.solver, threads=args.threads, seed=args.seed, **options)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _split_spec(args: argparse.Namespace) -> SplitSpec:
    """The split the options name (unset ones filled in, and checked, by _split_defaults)."""
    return SplitSpec(args.split, args.valid_pct, args.holdout, args.seed)


def _split(args: argparse.Namespace, dataset: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, test)`` tables of the split the options name, columns user, item, rating first."""
    return split_dataset(dataset, _split_spec(args), _duplicates(args), args.data_dir)


def cmd_train(args: argparse.Namespace) -> int:
    _split_defaults(args)
    if args.resume and args.checkpoint is None:
        raise CliError("--resume needs --checkpoint PATH (the checkpoint to continue)")
    config = _config(args)  # checked before any data is read or any process started
    if args.out is not None:
        check_writable(args.out)  # refused now, not after the training it would throw away
    if args.checkpoint is not None and not args.resume:
        check_output_file(args.checkpoint)
    several = args.nproc > 1 or distributed.launched_by_torchrun()
    solver = SOLVERS[config.solver]
    if config.solver != "sgd" and args.lr_find:
        raise CliError("--lr-find applies to the sgd solver (e.g. --preset lesson)")
    if args.checkpoint and not solver.resumable:
        raise CliError(f"--checkpoint applies to the {_solvers_that('resumable')} solvers; {config.solver} does not "
                       "save checkpoints (drop --checkpoint)")
    if several and not solver.multiprocess:
        raise CliError(f"--nproc applies to the {_solvers_that('multiprocess')} solvers; {config.solver} runs in one "
                       "process (drop --nproc)")
    if several and config.solver == "sparse":
        from collabkit.training.sharded import require_torchrec

        require_torchrec()  # before any worker starts
    if config.patience is not None:
        _check_early_stop(args, several)
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        return distributed.launch(_without_nproc(args.argv), args.nproc)
    if not distributed.launched_by_torchrun():
        return _train(args, config, _device(args.device))
    device = _device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    distributed.init(device, args.backend)
    finished = False
    try:
        if distributed.is_main():
            status = _train(args, config, device)
        else:
            logging.getLogger("collabkit").setLevel(logging.ERROR)  # only rank 0 speaks
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                status = _train(args, config, device)
        finished = True
        return status
    except Exception as exc:
        if distributed.peer_lost(exc):
            raise distributed.PeerLostError(f"rank {distributed.rank()} stopped: another rank failed ({exc})") from exc
        raise
    finally:
        # a rank that failed leaves without the final barrier: the others, waiting in a collective of the
        # training, see its connection close and stop at once, instead of at the collectives' timeout
        distributed.shutdown(wait=finished)


def _solvers_that(capability: str) -> str:
    """The names of the solvers with ``capability`` (``resumable``, ``multiprocess``), as "a, b and c"."""
    names = [name for name, solver in SOLVERS.items() if getattr(solver, capability)]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 2 else names)


def _without_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _distributed_check(learn) -> dict:
    """Evidence that the ranks agree: the RMSE from summed errors against the RMSE of all predictions
    gathered, and a checksum of every rank's weights."""
    preds, targs = learn.get_preds(dl=learn.valid_share())
    preds, targs = distributed.all_gather_cat(preds), distributed.all_gather_cat(targs)
    weights = torch.cat([p.detach().double().reshape(-1) for p in learn.model.parameters()])
    checksum = torch.stack([weights.sum(), (weights**2).sum()])
    sums = distributed.all_gather_cat(checksum).reshape(-1, 2)
    return {
        "world_size": distributed.world_size(),
        "rmse_from_sums": learn.recorder.values[-1][2],
        "rmse_of_gathered_predictions": rmse(preds, targs) if len(targs) else None,  # (--valid-pct 0: none)
        "weight_checksums": sums.tolist(),
    }


def _split_record(args: argparse.Namespace) -> dict:
    """The split options, saved with the model so that ``evaluate`` can replay them."""
    return _split_spec(args).record()


def _feedback(args: argparse.Namespace, dataset: Dataset) -> str:
    """explicit or implicit: as --feedback says, else guessed from the third column (and said)."""
    if args.feedback != "auto":
        return args.feedback
    rating = dataset.rating_col
    if not rating or rating not in dataset.ratings.columns:
        guess, why = "implicit", "the table has no third (rating) column"
    elif str(rating).lower() in WEIGHT_NAMES:
        guess, why = "implicit", f"its third column {rating!r} is named like a count"
    else:
        if args.data not in REGISTRY and not args.data.startswith(SYNTHETIC_PREFIX) and not getattr(args, "json", 0):
            print(f"feedback: explicit (ratings in column {rating!r}; --feedback implicit if they are counts)")
        return "explicit"
    print(f"feedback: implicit ({why}; --feedback explicit to override)")
    return guess


def _interaction_table(args: argparse.Namespace, dataset: Dataset) -> Dataset:
    """Implicit feedback as a three-column table: user, item, and the count or weight (1 where none is given)."""
    frame, weight = dataset.ratings, args.rating_col or dataset.rating_col
    if not weight or weight not in frame.columns or (args.rating_col is None and str(weight).lower() not in WEIGHT_NAMES):
        weight = "weight" if "weight" not in frame.columns else "__weight__"
        frame = frame.assign(**{weight: np.float32(1.0)})
    if args.duplicates is None:
        args.duplicates = "keep"  # repeated plays add up
    return dataclasses.replace(dataset, ratings=frame, rating_col=weight)


def _early_stop_report(learn, config: TrainConfig) -> str:
    """One line: where --early-stop stopped and which epoch's weights were kept."""
    valid = [row[1] for row in learn.recorder.values]
    best = min(range(len(valid)), key=valid.__getitem__)
    ran = len(valid)
    epochs = config.settings().epochs
    when = f"stopped after epoch {ran - 1} of {epochs}" if ran < epochs else f"ran all {epochs} epochs"
    return (f"early stopping: {when}; kept the weights of epoch {best} (valid_loss {valid[best]:.6f}), "
            "chosen on the validation rows")


def _check_early_stop(args: argparse.Namespace, several: bool) -> None:
    """--early-stop needs validation rows that are not the test set, in one process."""
    if several:
        raise CliError("--early-stop runs in one process; drop --nproc (or --early-stop)")
    if args.resume:
        raise CliError("--early-stop does not carry over a --resume yet (the checkpoint holds no best epoch); "
                       "resume without --early-stop")
    if args.split in ML_100K_SPLITS:
        raise CliError(f"--early-stop chooses the epoch on the validation rows, which with --split {args.split} "
                       "are that split's test set; use --split random (or drop --early-stop)")
    if args.split in ("random", "temporal") and args.valid_pct == 0:
        raise CliError("--early-stop needs validation rows to watch; drop --valid-pct 0 (or --early-stop)")


def _train(args: argparse.Namespace, config: TrainConfig, device: torch.device) -> int:
    started = time.perf_counter()
    dataset = _load_table(args)
    if _feedback(args, dataset) == "implicit":
        if distributed.world_size() > 1:
            raise CliError("implicit feedback trains a ranking model on one process; drop --nproc")
        return _train_implicit(args, _interaction_table(args, dataset), started)
    train_frame, valid_frame = _split(args, dataset)
    check_rating_scale(train_frame.iloc[:, 2].to_numpy(), str(train_frame.columns[2]))
    learn = prepare(
        config, train_frame, valid_frame, duplicates=_duplicates(args), device=device,
        cbs=[ProgressCallback(bar=False if args.no_progress else None)],
    )
    dls, settings = learn.dls, config.settings()
    y_range = getattr(learn.model, "y_range", None)
    print(
        f"{dataset.name}: {dls.train.n:,} train / {dls.valid.n:,} valid ratings ({args.split} split), "
        f"{len(dls.users):,} users, {len(dls.items):,} items; model {getattr(settings, 'model', 'dot-bias')}, "
        f"y_range {y_range}"
    )
    lr, lr_curve = getattr(settings, "lr", None), None
    if config.solver == "bayes":
        print(f"Bayesian PMF by Gibbs sampling: {settings.sweeps} sweeps, {settings.burn_in} burn-in, "
              f"{settings.n_factors} factors; a row per {settings.report_every} sweeps")
    elif config.solver == "bayes-svdpp":
        print(f"Bayesian SVD++ by Gibbs sampling: {settings.sweeps} sweeps, {settings.burn_in} burn-in, every "
              f"{settings.thin} kept, {settings.n_factors} factors; a row per {settings.report_every} sweeps")
    elif args.resume:  # (the solvers that cannot resume were refused --checkpoint in cmd_train)
        resume(learn, config, args.checkpoint)
    elif args.lr_find:
        lr_curve = learn.lr_find(show_plot=False)
        print(f"lr_find suggests lr {lr_curve.valley:.2e} (valley)")
        lr = lr_curve.valley if args.lr is None else lr
    if not args.resume:
        fit(learn, config, lr=lr, checkpoint=args.checkpoint)
    if config.patience is not None:
        print(_early_stop_report(learn, config))
    info = {
        "data": dataset.name,
        "feedback": "explicit",
        **_split_record(args),
        "config": {**config.record(), **({"lr": lr} if lr is not None else {})},
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recorder": learn.recorder.to_dict(),
    }
    titles = dataset.titles.to_dict() if len(dataset.titles) else None
    recommender = Recommender.from_learner(learn, titles=titles, info=info)
    info = recommender.info  # (from_learner keeps its own copy: record the rest there)
    preds, targs = learn.get_preds()
    preds = torch.from_numpy(recommender.on_scale(preds.cpu().numpy()))  # as the saved model will predict
    info["valid_rmse"] = info["valid_mae"] = None
    if dls.valid.n:
        info["valid_rmse"], info["valid_mae"] = rmse(preds, targs), mae(preds, targs)
        print(f"\nvalid RMSE {info['valid_rmse']:.4f}  MAE {info['valid_mae']:.4f}  "
              f"({time.perf_counter() - started:.2f} s in all)")
    else:
        print(f"\nno validation split: trained on every rating ({time.perf_counter() - started:.2f} s in all); "
              "score it on held-out data with `collabkit evaluate --test FILE`")
    if lr_curve is not None:
        info["lr_find"] = lr_curve.to_dict()
    if distributed.world_size() > 1:
        info["distributed"] = _distributed_check(learn)
    if args.ranker != "none" and distributed.is_main():
        _fit_ranker(recommender, args.ranker, train_frame, valid_frame)
    if args.show > 0 and dls.valid.n:
        _print_samples(recommender, dls, preds, args.show)
    if args.out is not None and distributed.is_main():
        recommender.save(args.out)
        print(f"\nsaved model to {args.out}/")
    return 0


def _fit_ranker(
    rec: Recommender, name: str, train_frame: pd.DataFrame, valid_frame: pd.DataFrame
) -> None:
    """Fit the ranking model beside the rating model, and report it (:func:`_report_ranker`)."""
    started = time.perf_counter()
    rec.fit_ranker(name)
    _report_ranker(rec, time.perf_counter() - started, train_frame, valid_frame)


def _report_ranker(rec: Recommender, seconds: float, train_frame: pd.DataFrame, valid_frame: pd.DataFrame) -> None:
    """Say how long the ranking model took, and print its validation top-10 beside popularity's."""
    rec.info["ranker_seconds"] = seconds  # (rec keeps its own copy of the training record)
    print(f"ranking model: {rec.ranker.name} {rec.ranker.config()} fitted in {seconds:.2f} s")
    if len(valid_frame) == 0:
        return
    if rec.item_trained.sum() <= 10:  # a top-10 of at most 10 items says nothing (and evaluate refuses k=10)
        print(f"valid top-10: not measured, with {int(rec.item_trained.sum())} trained items")
        return
    metrics = evaluate(rec, train_frame, valid_frame, k=10)
    table = metrics.set_index("metric")
    if "precision@10" not in table.index:
        return
    ranking = {m: float(table.loc[m, "value"]) for m in ("precision@10", "ndcg@10")}
    rec.info["valid_ranking"] = ranking
    print(f"valid top-10: precision {ranking['precision@10']:.4f}  NDCG {ranking['ndcg@10']:.4f}  "
          f"(most popular: {table.loc['precision@10', 'popularity']:.4f} / {table.loc['ndcg@10', 'popularity']:.4f})")


def _train_implicit(args: argparse.Namespace, dataset: Dataset, started: float) -> int:
    """Implicit feedback: a ranking model only (there are no ratings to predict)."""
    if args.ranker == "none":
        raise CliError("implicit feedback trains only a ranking model; --ranker none leaves nothing to train")
    rating_options = [n for n in ("solver", *TRAIN_OPTIONS) if getattr(args, n, None) is not None]
    if rating_options or args.preset != "default":
        flags = ", ".join(map(_flag, rating_options)) or f"--preset {args.preset}"
        raise CliError(f"{flags} set(s) up a rating model, and implicit feedback trains only a ranking model; "
                       "leave it out (or --feedback explicit if the third column holds ratings)")
    train_frame, valid_frame = _split(args, dataset)
    titles = dataset.titles.to_dict() if len(dataset.titles) else None
    info = {
        "data": dataset.name, "feedback": "implicit", **_split_record(args),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fitting = time.perf_counter()
    rec = Recommender.from_interactions(train_frame, weight_col=str(train_frame.columns[2]), titles=titles,
                                        ranker=args.ranker, info=info)
    seconds = time.perf_counter() - fitting
    print(f"{dataset.name}: {len(train_frame):,} train / {len(valid_frame):,} valid interactions ({args.split} split), "
          f"{len(rec.users):,} users, {len(rec.items):,} items; implicit feedback, ranking model only")
    _report_ranker(rec, seconds, train_frame, valid_frame)
    print(f"({time.perf_counter() - started:.2f} s in all)")
    if args.out is not None:
        rec.save(args.out)
        print(f"\nsaved model to {args.out}/")
    return 0


def _print_metrics(frame: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"protocol": frame.attrs.get("protocol"), "metrics": frame.to_dict(orient="records")}))
        return
    print(f"protocol: {frame.attrs.get('protocol')}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def cmd_evaluate(args: argparse.Namespace) -> int:
    rec = Recommender.load(args.model)
    if args.test is not None:
        return _evaluate_file(args, rec)
    given = {name: getattr(args, name) for name in SPLIT_DEFAULTS if getattr(args, name) is not None}
    _split_defaults(args, rec.info)
    if not given and "split" in rec.info:
        print(f"split: {args.split}, valid-pct {args.valid_pct}, holdout {args.holdout}, seed {args.seed} "
              "(as recorded with the model)", file=sys.stderr if args.json else sys.stdout)
    dataset = _load_table(args)
    if not rec.predicts_ratings:
        dataset = _interaction_table(args, dataset)
    train_frame, test_frame = _split(args, dataset)
    if len(test_frame) == 0:
        raise CliError("this split holds nothing out (the model was trained with --valid-pct 0, on every rating); "
                       "score it on a separate file with --test FILE")
    metrics = evaluate(rec, train_frame, test_frame, k=args.k, threshold=args.threshold, rank_by=args.rank_by,
                       allow_overlap=args.allow_overlap)
    _print_metrics(metrics, args.json)
    return 0


def _evaluate_file(args: argparse.Namespace, rec: Recommender) -> int:
    """evaluate --test FILE: the file is the test set; the model's own training pairs are what it saw."""
    test = read_ratings_file(args.test, args.sep)
    wanted = [args.user_col or rec.columns["user"], args.item_col or rec.columns["item"],
              args.rating_col or rec.columns.get("rating") or ""]
    if rec.predicts_ratings:
        cols = wanted if set(wanted) <= set(test.columns) else list(test.columns[:3])
    else:
        cols = wanted[:2] if set(wanted[:2]) <= set(test.columns) else list(test.columns[:2])
        test = test.assign(weight=np.float32(1.0))
        cols.append("weight")
    if len(cols) < 3:
        raise CliError(f"--test {args.test} needs user, item and rating columns; it has {list(test.columns)}")
    metrics = evaluate(rec, None, test[cols], k=args.k, threshold=args.threshold, rank_by=args.rank_by,
                       allow_overlap=args.allow_overlap)
    _print_metrics(metrics, args.json)
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.patience is not None:
        raise CliError("--early-stop would choose each fold's epoch on its test fold; cross-validate without it")
    dataset = _load_table(args)
    if _feedback(args, dataset) == "implicit":
        raise CliError("cv trains rating models; for implicit feedback use train with a split, then evaluate")
    columns = (dataset.user_col, dataset.item_col, dataset.rating_col)
    per_fold = cross_validate(
        config, dataset.ratings, args.folds, args.seed, args.k, args.threshold, columns, duplicates=_duplicates(args),
        ranker=None if args.ranker == "none" else args.ranker, rank_by=args.rank_by,
    )
    summary = summarise(per_fold)
    summary.attrs = per_fold.attrs
    if args.json:
        print(json.dumps({"protocol": per_fold.attrs["protocol"], "folds": per_fold.to_dict(orient="records"),
                          "summary": summary.to_dict(orient="records")}))
        return 0
    print(f"{dataset.name}: {args.folds}-fold cross-validation, preset {args.preset}")
    shown = ["fold", "rmse", "mae", f"precision@{args.k}", f"ndcg@{args.k}", f"popularity precision@{args.k}",
             f"popularity ndcg@{args.k}", "fit_seconds"]
    print(per_fold[[c for c in shown if c in per_fold]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print()
    _print_metrics(summary, False)
    return 0


def _print_samples(recommender: Recommender, dls: CollabDataLoaders, preds: torch.Tensor, n: int) -> None:
    """A few validation ratings beside their predictions, with titles when known."""
    rows = np.random.default_rng(0).choice(dls.valid.n, size=min(n, dls.valid.n), replace=False)
    sample = dls.decode(dls.valid.x[rows], dls.valid.y[rows])
    sample["predicted"] = preds[rows].cpu().numpy().round(2)
    if recommender.titles is not None:
        sample.insert(2, "title", [recommender.titles[i] for i in dls.valid.x[rows, 1].tolist()])
    print("\nvalidation ratings beside the model's predictions:")
    print(sample.to_string(index=False))


def _show(frame: pd.DataFrame, as_json: bool, title: str | None = None) -> None:
    if as_json:
        print(frame.to_json(orient="records", force_ascii=False))
        return
    if title:
        print(title)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(frame) else "(none)")


def cmd_predict(args: argparse.Namespace) -> int:
    rec = Recommender.load(args.model)
    if args.output is not None:
        check_output_file(args.output)
    if args.pairs is not None:
        pairs = read_ratings_file(args.pairs, args.sep)
        cols = [rec.columns["user"], rec.columns["item"]]
        if not set(cols) <= set(pairs.columns):
            if pairs.shape[1] < 2:
                raise CliError(f"--pairs needs user and item columns; {args.pairs} has {list(pairs.columns)}")
            cols = list(pairs.columns[:2])
        empty = pairs[cols].isna().any(axis=1)
        if empty.any():
            first = empty.idxmax()
            missing = " or ".join(c for c in cols if pd.isna(pairs.at[first, c]))
            raise CliError(f"--pairs {args.pairs}: line {int(first) + pairs.attrs.get(LINE_OFFSET, 2)} has no "
                           f"{missing} id; fill it in or drop the line")
        users, items = pairs[cols[0]].tolist(), pairs[cols[1]].tolist()
    elif args.user is not None and args.item is not None:
        users, items = [args.user], [args.item]
    else:
        raise CliError("give --user and --item, or --pairs FILE")
    out = rec.predict(users, items, strict=args.strict)
    if args.output is not None:
        out.to_csv(args.output, index=False)
        print(f"wrote {len(out)} predictions to {args.output}")
    elif args.pairs is not None and not args.json:
        out.to_csv(sys.stdout, index=False)  # a batch in, a CSV out
    else:
        _show(out, args.json)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    rec = Recommender.load(args.model)
    if (args.user is None) == (args.ratings is None):
        raise CliError("give either --user ID [ID ...] or --ratings FILE (a new user's ratings): exactly one of them")
    if args.ratings is not None:
        out = rec.recommend_new_user(read_ratings_file(args.ratings, args.sep), n=args.n, exclude_seen=not args.include_seen,
                                     rank_by=args.rank_by, min_ratings=args.min_ratings)
    else:
        out = rec.recommend(args.user, n=args.n, exclude_seen=not args.include_seen, min_ratings=args.min_ratings,
                            rank_by=args.rank_by)
    _show(out, args.json)
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    rec = Recommender.load(args.model)
    if (args.item is None) == (args.user is None):
        raise CliError("give either --item ID_OR_TITLE or --user ID: exactly one of them")
    if args.item is not None:
        out = rec.similar_items(args.item, n=args.n, min_ratings=args.min_ratings, rank_by=args.rank_by)
    else:
        out = rec.similar_users(args.user, n=args.n)
    _show(out, args.json)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from collabkit.interpret import item_bias_table, item_pca, save_plots  # matplotlib: only this command needs it

    rec = Recommender.load(args.model)
    tables: dict[str, pd.DataFrame] = {}
    if isinstance(rec.model, DotProductBias):
        low, high = item_bias_table(rec, n=args.n)
        tables["lowest bias: rated low even by people whose taste they match"] = low
        tables["highest bias: liked even by people whose taste they do not match"] = high
    pca = item_pca(rec)
    for c in range(1, len(pca.explained) + 1):
        low, high = pca.extremes(c, n=min(args.n, 5))
        share = f"{pca.explained[c - 1]:.0%} of variance"
        tables[f"component {c} ({share}), low end"] = low
        tables[f"component {c} ({share}), high end"] = high
    if args.json:
        print(json.dumps({k: v.to_dict(orient="records") for k, v in tables.items()}, ensure_ascii=False, default=str))
    else:
        for name, frame in tables.items():
            _show(frame, False, title=f"\n{name}:")
    if args.plots is not None:
        for path in save_plots(rec, args.plots, pca):
            print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _where(name: str) -> str:
    entry = datasets_mod.info(name)
    if entry.bundled:
        return "bundled"
    folder = datasets_mod.cached_folder(name)
    return str(folder) if folder is not None else "not here"


def cmd_datasets(args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = [
            {"name": e.name, "size": e.size, "ratings": e.ratings, "license": "redistributable" if e.redistributable
             else "no redistribution", "here": _where(e.name)}
            for e in datasets_mod.REGISTRY.values()
        ]
        print(pd.DataFrame(rows).to_string(index=False))
        return 0
    if args.action == "info":
        entry = datasets_mod.info(args.name)
        for key, value in [*vars(entry).items(), ("here", _where(entry.name))]:
            print(f"{key:16} {value}")
        return 0
    if args.action == "download":
        folder = datasets_mod.fetch(args.name)
        entry = datasets_mod.info(args.name)
        print(f"{args.name} is in {folder}\nlicense: {entry.license}")
        text = datasets_mod.license_text(folder)
        if text:
            print(f"\n{text}")
        return 0
    folder = datasets_mod.add_local(args.name, args.path)
    print(f"{args.name} now reads from {folder}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from collabkit import serve
    except ImportError as exc:
        raise CliError(
            f"collabkit serve needs the serve extra ({exc.name} is missing): pip install 'collabkit[serve]'"
        ) from exc
    serve.run(args.model, host=args.host, port=args.port, workers=args.workers, watch_interval=args.watch,
              request_timeout=args.request_timeout)
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "datasets": cmd_datasets,
    "evaluate": cmd_evaluate,
    "cv": cmd_cv,
    "train": cmd_train,
    "predict": cmd_predict,
    "recommend": cmd_recommend,
    "similar": cmd_similar,
    "explain": cmd_explain,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"collabkit: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("collabkit: interrupted", file=sys.stderr)
        return 130
    except distributed.PeerLostError as exc:  # the rank that failed first says why; this one only follows
        if args.verbose:
            traceback.print_exc()
        log.info("%s", exc)
        return distributed.PEER_LOST
    except (CollabkitError, OSError) as exc:  # what the user can fix: a file, a setting, the data
        if args.verbose:
            traceback.print_exc()
        print(f"collabkit: error: {_first_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else is a bug in collabkit (or below it): said as one, never as bad input
        if args.verbose:
            traceback.print_exc()
        print(f"collabkit: internal error (a bug, please report it): {type(exc).__name__}: {_first_line(exc)}"
              f"{'' if args.verbose else '; run with -v for the traceback'}", file=sys.stderr)
        return 2


def _first_line(exc: BaseException) -> str:
    """An exception's message as one line, in the CLI's words (``--duplicates mean``, not ``duplicates='mean'``)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"duplicates='(\w+)'", r"--duplicates \1", message)


if __name__ == "__main__":
    sys.exit(main())
