"""Federated evaluation: the models the devices actually run, not only the exported one.

In the paper's variant every device keeps its own log_sigma2 (and batch-norm statistics), so each
device runs its own model: the shared theta with its own dropout rates, hence its own mask. The
run's validation and test use device 0's (the exported model); :func:`evaluate_devices` measures
E devices chosen by a seeded draw (:func:`devices_to_evaluate`), each with the shared parameters
and its own state, on the whole validation set, as Flower's ``configure_evaluate`` /
``aggregate_evaluate`` do. Under several processes, the process hosting a device broadcasts its
state and every process evaluates its slice of the data; the counts are summed.
"""

import numpy as np
import torch
import torch.distributed as dist

from lightning_fed.federation.hosting import hosted_devices


def devices_to_evaluate(num_devices: int, count: int, seed: int, epoch: int) -> list[int]:
    """``count`` of ``num_devices`` devices for epoch ``epoch``'s evaluation, a function of
    ``(seed, epoch)`` alone (the same in every process), sorted.

    Example::

        >>> devices_to_evaluate(1000, 3, seed=0, epoch=2) == devices_to_evaluate(1000, 3, seed=0, epoch=2)
        True
        >>> devices_to_evaluate(4, 10, seed=0, epoch=0)  # more than there are: every device
        [0, 1, 2, 3]
    """
    if count >= num_devices:
        return list(range(num_devices))
    rng = np.random.default_rng([seed, epoch, 0xE7A1])
    return sorted(rng.choice(num_devices, count, replace=False).tolist())


@torch.no_grad()
def evaluate_devices(strategy, devices: list[int], batches) -> dict[int, float]:
    """Each device's accuracy on ``batches`` (``(x, y)`` pairs; this process's slice of the
    validation set), with the shared parameters and its own local state; the module's own state
    is as it was afterwards. ``batches`` is iterated once per device."""
    module, plan = strategy.lightning_module, strategy.plan
    names = [*plan.local_parameters, *plan.local_buffers]
    tensors = [_tensor(module, name, plan) for name in names]
    saved = [t.detach().clone() for t in tensors]
    hosted, accuracy = set(strategy.hosted_devices), {}
    training = module.training
    module.eval()
    try:
        for device in devices:
            if device in hosted:
                strategy.devices.load(device, stages=False)  # its local parameters and buffers
            if strategy.world_size > 1 and dist.is_initialized():
                owner = next(r for r in range(strategy.world_size) if device in _hosted(strategy, r))
                for tensor in tensors:
                    dist.broadcast(tensor.data, src=owner)
            accuracy[device] = _accuracy(module, batches, strategy)
    finally:
        for tensor, value in zip(tensors, saved, strict=True):
            tensor.copy_(value)
        module.train(training)
    return accuracy


def _hosted(strategy, rank: int) -> list[int]:
    return hosted_devices(strategy.num_devices, strategy.world_size, rank)


def _tensor(module, name: str, plan) -> torch.Tensor:
    return module.get_parameter(name).data if name in plan.local_parameters else module.get_buffer(name)


def _accuracy(module, batches, strategy) -> float:
    counts = torch.zeros(2, dtype=torch.float64, device=strategy.root_device)
    for images, labels in batches:
        images, labels = images.to(strategy.root_device), labels.to(strategy.root_device)
        counts[0] += (module(images).argmax(-1) == labels).sum()
        counts[1] += labels.numel()
    if strategy.world_size > 1 and dist.is_initialized():
        dist.all_reduce(counts)
    return float(counts[0] / counts[1]) if counts[1] else float("nan")
