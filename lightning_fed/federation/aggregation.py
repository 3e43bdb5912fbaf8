"""Aggregation of the devices' decoded updates: free functions over plain tensors."""

from collections.abc import Iterable

import torch


class RunningSum:
    """Weighted sum of messages (lists of flat tensors), added one device at a time.

    Example::

        >>> total = RunningSum()
        >>> total.add([torch.tensor([1.0, 0.0])], weight=1.0)
        >>> total.add([torch.tensor([3.0, 2.0])], weight=1.0)
        >>> total.tensors, total.weight
        ([tensor([4., 2.])], 2.0)
    """

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] | None = None
        self.weight = 0.0

    def add(self, tensors: list[torch.Tensor], weight: float = 1.0) -> None:
        if self.tensors is None:
            self.tensors = [t * weight if weight != 1.0 else t.clone() for t in tensors]
        else:
            for acc, value in zip(self.tensors, tensors, strict=True):
                acc.add_(value, alpha=weight)  # no temporary of ``value * weight``
        self.weight += weight


def federated_mean(
    updates: Iterable[list[torch.Tensor]], weights: Iterable[float] | None = None
) -> list[torch.Tensor]:
    """The server's average of the devices' updates: ``sum_i w_i u_i / sum_i w_i``.

    With no weights every device counts once (the paper: the mean over N devices); FedAvg weights
    by shard size.

    Example::

        >>> federated_mean([[torch.tensor([1.0])], [torch.tensor([3.0])]])
        [tensor([2.])]
        >>> federated_mean([[torch.tensor([1.0])], [torch.tensor([3.0])]], weights=[3, 1])
        [tensor([1.5000])]
    """
    total = RunningSum()
    updates = list(updates)
    weights = [1.0] * len(updates) if weights is None else [float(w) for w in weights]
    if len(weights) != len(updates) or not updates:
        raise ValueError(
            f"need one weight per update and at least one update, got {len(weights)} and {len(updates)}"
        )
    for update, weight in zip(updates, weights, strict=True):
        total.add(update, weight)
    return [t / total.weight for t in total.tensors]
