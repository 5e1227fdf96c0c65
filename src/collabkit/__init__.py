"""collabkit: collaborative filtering, from the fastai lesson to a real tool.

The package reads in the order data flows::

    data/        ratings table -> id vocabularies -> index tensors -> batches, splits
    datasets.py  named datasets (bundled ml-latest-small, local ml-100k)
    models/      index tensors -> predicted ratings; interactions -> item rankings (EASE, iALS)
    training/    Learner: fit, fit_one_cycle, lr_find, weight decay, callbacks
    metrics.py   rmse, mae
    io.py        save/load a trained model (safetensors + JSON, no pickle)
    recommend.py predictions in raw ids for a fitted model
    cli.py       the ``collabkit`` command
    fastai.py    the lesson's names, for ``from collabkit.fastai import *``
"""

__version__ = "0.1.0"

from collabkit.data import CollabDataLoaders, Vocabulary, validate_ratings  # noqa: E402
from collabkit.data.interactions import Interactions  # noqa: E402
from collabkit.datasets import load_dataset  # noqa: E402
from collabkit.errors import (  # noqa: E402
    CollabkitError,
    DataError,
    DatasetNotFoundError,
    ModelFileError,
    NotFittedError,
    TrainingDivergedError,
    UnknownIdError,
)
from collabkit.estimators import MF, BayesianMF  # noqa: E402
from collabkit.io import load_model, save_model  # noqa: E402
from collabkit.metrics import mae, rmse  # noqa: E402
from collabkit.models import DotProduct, DotProductBias, EmbeddingNN  # noqa: E402
from collabkit.models.ease import EASE  # noqa: E402
from collabkit.models.ials import ImplicitALS  # noqa: E402
from collabkit.models.popular import Popularity  # noqa: E402
from collabkit.recommend import Recommender  # noqa: E402
from collabkit.training import Learner  # noqa: E402

__all__ = [
    "BayesianMF",
    "CollabDataLoaders",
    "CollabkitError",
    "DataError",
    "DatasetNotFoundError",
    "DotProduct",
    "DotProductBias",
    "EASE",
    "EmbeddingNN",
    "ImplicitALS",
    "Interactions",
    "Learner",
    "MF",
    "ModelFileError",
    "NotFittedError",
    "Popularity",
    "Recommender",
    "TrainingDivergedError",
    "UnknownIdError",
    "Vocabulary",
    "load_dataset",
    "load_model",
    "mae",
    "rmse",
    "save_model",
    "validate_ratings",
]
