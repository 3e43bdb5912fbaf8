"""Aggregation of the devices' decoded updates: their weighted running sum."""

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
