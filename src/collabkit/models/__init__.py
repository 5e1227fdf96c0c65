"""Index tensors -> predicted ratings."""

from collabkit.models.dot import DotProduct, DotProductBias
from collabkit.models.layers import Embedding, Module, create_params, sigmoid_range
from collabkit.models.nn import EmbeddingNN, emb_sz_rule

__all__ = [
    "DotProduct",
    "DotProductBias",
    "Embedding",
    "EmbeddingNN",
    "Module",
    "create_params",
    "emb_sz_rule",
    "sigmoid_range",
]
