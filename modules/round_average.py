"""The training figures of a round, averaged over the round's devices and every process.

Under :class:`~lightning_fed.FederatedStrategy` one Trainer step is one round, in which each
process hosts several devices in turn, each taking one or more local steps. A figure logged
from ``training_step`` would be the last hosted device's, and so would change with
``--processes``. :class:`RoundAverage` keeps each device's figures of its last local step and
gives their mean over every device of the round, summed across processes (one all-reduce of the
sums and the count), whatever the process layout. Under another strategy each process is one
device.

Example::

    >>> import torch
    >>> average = RoundAverage(["train/nll"])
    >>> average.add(0, {"train/nll": torch.tensor(1.0)})
    >>> average.add(0, {"train/nll": torch.tensor(3.0)})  # device 0's later local step replaces it
    >>> average.add(1, {"train/nll": torch.tensor(5.0)})
    >>> average.mean(strategy=None)
    {'train/nll': tensor(4., dtype=torch.float64)}
"""

import torch


class RoundAverage:
    """Each device's last figures of a round (``add``), and their mean over the round (``mean``)."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._by_device: dict = {}

    def add(self, device, figures: dict[str, torch.Tensor]) -> None:
        """``device``'s figures of its latest local step (a device of None: the process's one)."""
        self._by_device[device] = {name: figures[name].detach() for name in self.names}

    def mean(self, strategy, device=None) -> dict[str, torch.Tensor] | None:
        """The round's mean of every figure over the devices of every process (None: no device
        took a step anywhere); the next round starts empty. ``strategy``: the Trainer's, whose
        ``reduce`` sums across processes (None: one process)."""
        sums = torch.zeros(len(self.names) + 1, dtype=torch.float64, device=device)
        for figures in self._by_device.values():
            sums[:-1] += torch.stack([figures[name].to(sums) for name in self.names])
            sums[-1] += 1
        self._by_device = {}
        if strategy is not None and getattr(strategy, "world_size", 1) > 1:
            sums = strategy.reduce(sums, reduce_op="sum")
        if not sums[-1]:
            return None
        return {name: sums[i] / sums[-1] for i, name in enumerate(self.names)}
