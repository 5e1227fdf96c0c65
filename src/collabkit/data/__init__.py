"""Ratings table -> id vocabularies -> index tensors -> batches, splits."""

from collabkit.data.loaders import CollabDataLoaders, IndexBatches
from collabkit.data.ratings import RatingRangeWarning, check_y_range, read_ratings_file, validate_ratings
from collabkit.data.splits import SplitSpec, random_split
from collabkit.data.vocab import UNKNOWN, Vocabulary

__all__ = [
    "UNKNOWN",
    "CollabDataLoaders",
    "IndexBatches",
    "RatingRangeWarning",
    "SplitSpec",
    "Vocabulary",
    "check_y_range",
    "random_split",
    "read_ratings_file",
    "validate_ratings",
]
