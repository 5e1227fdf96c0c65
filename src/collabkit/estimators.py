"""The front door for Python users: a model with its settings, ``fit(ratings)``, a :class:`Recommender` back.

In the style of scikit-learn and LensKit: every setting is a named keyword with
a default, and nothing is learned until ``fit``::

    import collabkit as ck

    rec = ck.BayesianMF(n_factors=10).fit(ratings)          # the default of `collabkit train`
    rec = ck.MF(n_factors=50, epochs=5, lr=5e-3, wd=0.1).fit(ratings)   # the lesson's recipe
    rec.predict([1], [318]); rec.recommend([1], n=10)

Both fit the rating model and then, unless ``ranker=None``, the ranking model
(:meth:`Recommender.fit_ranker`) that ranks top-N lists, similar items and new
users. For implicit feedback (no ratings) use :meth:`Recommender.from_interactions`.
The lesson's own ``Learner`` path (:mod:`collabkit.fastai`) is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from collabkit.data.ratings import Duplicates
from collabkit.recommend import Recommender
from collabkit.training.recipe import PRESETS, TrainConfig, train


class _Estimator:
    """Shared ``fit``: the subclass says which :class:`TrainConfig` its settings make."""

    ranker: str | None

    def config(self) -> TrainConfig:
        raise NotImplementedError

    def fit(
        self,
        ratings: pd.DataFrame,
        valid: pd.DataFrame | None = None,
        user_col: str | None = None,
        item_col: str | None = None,
        rating_col: str | None = None,
        titles: Mapping | None = None,
        duplicates: Duplicates = "error",
    ) -> Recommender:
        """Train on ``ratings`` (validating on ``valid``, if given) and return the :class:`Recommender`.

        Columns default to the first three (user, item, rating); ``titles`` maps item id -> title.
        """
        config = self.config()
        learn = train(config, ratings, valid, (user_col, item_col, rating_col), duplicates=duplicates)
        info = {"config": config.record()}
        rec = Recommender.from_learner(learn, titles=titles, info=info)
        return rec.fit_ranker(self.ranker) if self.ranker is not None else rec


class BayesianMF(_Estimator):
    """Bayesian matrix factorisation by Gibbs sampling (:mod:`collabkit.training.bayes`): what
    ``collabkit train`` fits by default (``--preset accurate`` fits the slower, more accurate Bayesian SVD++).

    Args:
        n_factors: factors per sample. sweeps, burn_in, thin: the chain. seed: its random numbers.
        ranker: the ranking model fitted beside it (``"auto"``, ``"ease"``, ``"ials"``, ``"popular"``, ``None``).
    """

    def __init__(self, n_factors: int = 10, sweeps: int = 30, burn_in: int = 5, thin: int = 1, seed: int = 42,
                 ranker: str | None = "auto") -> None:
        self.n_factors, self.sweeps, self.burn_in, self.thin, self.seed = n_factors, sweeps, burn_in, thin, seed
        self.ranker = ranker
        self.config()  # settings are checked now, not at fit

    def config(self) -> TrainConfig:
        return PRESETS["default"].replace(n_factors=self.n_factors, sweeps=self.sweeps, burn_in=self.burn_in,
                                          thin=self.thin, seed=self.seed)


class MF(_Estimator):
    """The lesson's matrix factorisation: ``DotProductBias`` trained with ``fit_one_cycle(epochs, lr, wd=wd)``.

    Args:
        n_factors, epochs, lr, wd, bs, seed: as in the lesson (defaults: 50, 5, 5e-3, 0.1, 64, 42).
        y_range: output range (``None``: 0 to 10% above the highest rating).
        ranker: the ranking model fitted beside it (see :class:`BayesianMF`).
    """

    def __init__(self, n_factors: int = 50, epochs: int = 5, lr: float = 5e-3, wd: float = 0.1, bs: int = 64,
                 y_range: tuple[float, float] | None = None, seed: int = 42, ranker: str | None = "auto") -> None:
        self.n_factors, self.epochs, self.lr, self.wd, self.bs = n_factors, epochs, lr, wd, bs
        self.y_range, self.seed, self.ranker = y_range, seed, ranker
        self.config()

    def config(self) -> TrainConfig:
        return PRESETS["lesson"].replace(n_factors=self.n_factors, epochs=self.epochs, lr=self.lr, wd=self.wd,
                                         bs=self.bs, y_range=self.y_range, seed=self.seed)
