"""Turn any model variational, and read KL and sparsity off any model."""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from lightning_fed.nn.layers import (
    DEFAULT_INIT_LOG_SIGMA2,
    DEFAULT_THRESHOLD,
    Conv2dSVD,
    EmbeddingSVD,
    LinearSVD,
    SparseVDMixin,
    check_threshold,
)


def _linear_twin(layer: nn.Linear, threshold: float, init_log_sigma2: float) -> LinearSVD:
    twin = LinearSVD(
        layer.in_features,
        layer.out_features,
        bias=layer.bias is not None,
        device=layer.weight.device,
        dtype=layer.weight.dtype,
        threshold=threshold,
        init_log_sigma2=init_log_sigma2,
    )
    return twin


def _conv_twin(layer: nn.Conv2d, threshold: float, init_log_sigma2: float) -> Conv2dSVD:
    return Conv2dSVD(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
        device=layer.weight.device,
        dtype=layer.weight.dtype,
        threshold=threshold,
        init_log_sigma2=init_log_sigma2,
    )


def _embedding_twin(layer: nn.Embedding, threshold: float, init_log_sigma2: float) -> EmbeddingSVD:
    return EmbeddingSVD(
        layer.num_embeddings, layer.embedding_dim, padding_idx=layer.padding_idx,
        device=layer.weight.device, dtype=layer.weight.dtype, threshold=threshold,
        init_log_sigma2=init_log_sigma2,
    )  # fmt: skip


def _variational_twin(layer: nn.Module, threshold: float, init_log_sigma2: float) -> nn.Module:
    """The variational twin of a plain ``nn.Linear`` / ``nn.Conv2d`` / ``nn.Embedding``, theta
    copied from it."""
    if isinstance(layer, SparseVDMixin):
        return layer
    if type(layer) is nn.Linear:
        twin = _linear_twin(layer, threshold, init_log_sigma2)
    elif type(layer) is nn.Conv2d:
        twin = _conv_twin(layer, threshold, init_log_sigma2)
    elif type(layer) is nn.Embedding:
        twin = _embedding_twin(layer, threshold, init_log_sigma2)
    else:
        return layer
    with torch.no_grad():
        twin.weight.copy_(layer.weight)
        if getattr(layer, "bias", None) is not None:
            twin.bias.copy_(layer.bias)
    twin.train(layer.training)
    return twin


def variational(
    model: nn.Module,
    threshold: float = DEFAULT_THRESHOLD,
    init_log_sigma2: float = DEFAULT_INIT_LOG_SIGMA2,
) -> nn.Module:
    """Replace every ``nn.Linear`` / ``nn.Conv2d`` / ``nn.Embedding`` of ``model`` by its variational
    twin, in place (a :class:`~lightning_fed.nn.recurrent.LSTM`'s matrices are ``nn.Linear`` layers).

    The existing weights become theta, so pretrained weights carry over; with a very small
    ``init_log_sigma2`` the converted model computes what the original did.

    Args:
        model: any ``nn.Module`` (a torchvision model works).
        threshold: log_alpha at or above which a weight is dropped.
        init_log_sigma2: initial value of every log_sigma2.

    Returns:
        ``model`` itself (or its twin when ``model`` is itself a Linear / Conv2d).

    Example::

        >>> net = variational(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
        >>> [type(m).__name__ for m in net]
        ['LinearSVD', 'ReLU', 'LinearSVD']
    """
    check_threshold(threshold)
    root = _variational_twin(model, threshold, init_log_sigma2)
    if root is not model:
        return root
    for name, child in list(model.named_children()):
        setattr(model, name, variational(child, threshold, init_log_sigma2))
    return model


def variational_layers(model: nn.Module) -> Iterator[tuple[str, SparseVDMixin]]:
    """``(name, layer)`` for every variational layer of ``model``.

    Example::

        >>> [name for name, _ in variational_layers(nn.Sequential(LinearSVD(2, 2)))]
        ['0']
    """
    for name, module in model.named_modules():
        if isinstance(module, SparseVDMixin):
            yield name, module


_KINDS = {nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv", nn.Linear: "fc", nn.Embedding: "embedding"}


def layer_labels(model: nn.Module) -> dict[str, str]:
    """Each convolution and linear layer of ``model`` named by kind and order (``conv1``, ``fc2``),
    by its module name: what a plot's legend says instead of ``network.3``.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2), nn.Linear(2, 1))
        >>> layer_labels(net)
        {'0': 'conv1', '3': 'fc1', '4': 'fc2'}
    """
    counts, labels = dict.fromkeys(_KINDS.values(), 0), {}
    for name, module in model.named_modules():
        kind = next((label for cls, label in _KINDS.items() if isinstance(module, cls)), None)
        if kind is not None:
            counts[kind] += 1
            labels[name] = f"{kind}{counts[kind]}"
    return labels


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Sum of the KL of every variational layer of ``model`` (zero if it has none).

    Example::

        >>> float(kl_divergence(nn.Linear(2, 2)))
        0.0
    """
    terms = [layer.kl() for _, layer in variational_layers(model)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


@dataclass(frozen=True)
class LayerSparsity:
    """Weights kept out of all the weights of one layer (or of the whole model)."""

    kept: int
    total: int

    @property
    def fraction(self) -> float:
        return self.kept / self.total if self.total else 0.0


@torch.no_grad()
def sparsity(model: nn.Module) -> dict[str, LayerSparsity]:
    """Kept weights per variational layer (``keep_mask``) and in total (key ``"total"``).

    Example::

        >>> report = sparsity(nn.Sequential(LinearSVD(2, 3)))
        >>> report["0"], report["total"].fraction
        (LayerSparsity(kept=6, total=6), 1.0)
    """
    report = {}
    for name, layer in variational_layers(model):
        mask = layer.keep_mask()
        report[name] = LayerSparsity(int(mask.sum()), mask.numel())
    report["total"] = LayerSparsity(
        sum(r.kept for r in report.values()), sum(r.total for r in report.values())
    )
    return report
