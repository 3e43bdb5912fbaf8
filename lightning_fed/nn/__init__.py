"""Sparse variational dropout (Molchanov et al. 2017): layers, model conversion, KL, sparsity."""

from lightning_fed.nn.convert import (
    LayerSparsity,
    kl_divergence,
    layer_labels,
    sparsity,
    variational,
    variational_layers,
)
from lightning_fed.nn.kl import kl_approximation, log_alpha_of
from lightning_fed.nn.layers import Conv2dSVD, EmbeddingSVD, LinearSVD, SparseVDMixin
from lightning_fed.nn.masking import GradientMasker
from lightning_fed.nn.recurrent import LSTM

__all__ = [
    "LSTM",
    "Conv2dSVD",
    "EmbeddingSVD",
    "GradientMasker",
    "LayerSparsity",
    "LinearSVD",
    "SparseVDMixin",
    "kl_approximation",
    "kl_divergence",
    "layer_labels",
    "log_alpha_of",
    "sparsity",
    "variational",
    "variational_layers",
]
