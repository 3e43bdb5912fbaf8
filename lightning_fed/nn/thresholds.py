"""The mask ``M(alpha)`` at another threshold: what a trained model keeps, and what the mask costs.

The threshold ``T`` of ``M(alpha) = [log_alpha < T]`` is chosen before training (3 in Molchanov et
al.), but a trained model can be evaluated at any ``T``: a lower one prunes more, a higher one puts
pruned weights back, and ``None`` evaluates theta itself, every weight kept. :func:`at_threshold`
sets ``T`` on every variational layer of a network for a block and restores the old ones after;
:func:`accuracy_at_thresholds` evaluates a classifier at each ``T`` of a list. If the model is no
better with its pruned weights back, the mask costs nothing and what the sparse model lacks lies
in the weights it kept.

Example::

    >>> from torch import nn
    >>> from lightning_fed.nn import variational
    >>> net = variational(nn.Linear(2, 1))
    >>> with torch.no_grad():
    ...     _ = net.weight.copy_(torch.tensor([[1.0, 0.1]]))
    ...     _ = net.log_sigma2.fill_(-2.0)  # log_alpha = -2 - log(theta^2): about -2.0 and 2.6
    >>> [int(net.keep_mask().sum())]
    [2]
    >>> with at_threshold(net, 1.0):
    ...     int(net.keep_mask().sum())
    1
    >>> with at_threshold(net, None):
    ...     net.eval()(torch.tensor([[0.0, 1.0]])).item() == (net.weight[0, 1] + net.bias[0]).item()
    True
    >>> net.threshold  # restored
    3.0
"""

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lightning_fed.nn.convert import sparsity, variational_layers
from lightning_fed.nn.layers import check_threshold


@contextmanager
def at_threshold(network: nn.Module, threshold: float | None) -> Iterator[nn.Module]:
    """``network`` with every variational layer's threshold set to ``threshold`` (None: no mask,
    every weight kept) inside the block; the layers' own thresholds are put back after it."""
    value = math.inf if threshold is None else check_threshold(threshold)
    layers = [layer for _, layer in variational_layers(network)]
    saved = [layer.threshold for layer in layers]
    for layer in layers:
        layer.threshold = value
    try:
        yield network
    finally:
        for layer, old in zip(layers, saved, strict=True):
            layer.threshold = old


@torch.no_grad()
def accuracy_at_thresholds(
    network: nn.Module, batches: Iterable, thresholds: Iterable[float | None]
) -> list[tuple[float | None, int, int, float]]:
    """For each threshold: (threshold, weights kept, weights, top-1 accuracy of ``network`` over
    ``batches`` of ``(x, y)``), evaluated with the masked weights (``network.eval()``; its
    training mode is put back after)."""
    training, batches, rows = network.training, list(batches), []
    network.eval()
    for threshold in thresholds:
        with at_threshold(network, threshold):
            correct = total = 0
            for x, y in batches:
                correct += int((network(x).argmax(-1) == y).sum())
                total += y.numel()
            kept = sparsity(network)["total"]
            rows.append((threshold, kept.kept, kept.total, correct / max(total, 1)))
    network.train(training)
    return rows
