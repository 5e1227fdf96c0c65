"""Name -> class, for every model collabkit can save, load and train: the one table io, the CLI and
the recipes read.

A new rating model (an ``nn.Module`` with ``config()``) or ranking model (a
:class:`~collabkit.models.ranker.Ranker`) is one file in ``models/`` and one
line here.
"""

from __future__ import annotations

from torch import nn

from collabkit.errors import ConfigError
from collabkit.models.dot import DotProduct, DotProductBias
from collabkit.models.ease import EASE
from collabkit.models.ials import ImplicitALS
from collabkit.models.nn import EmbeddingNN
from collabkit.models.popular import Popularity
from collabkit.models.ranker import Ranker

RATING_MODELS: dict[str, type[nn.Module]] = {
    "DotProduct": DotProduct,
    "DotProductBias": DotProductBias,
    "EmbeddingNN": EmbeddingNN,
}

RANKERS: dict[str, type[Ranker]] = {
    "ease": EASE,
    "ials": ImplicitALS,
    "popular": Popularity,
}


def ranker(name: str, **config) -> Ranker:
    """An unfitted ranker by registry name; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in RANKERS:
        raise ConfigError(f"unknown ranker {name!r}; collabkit has {', '.join(RANKERS)}")
    return RANKERS[name](**config)
