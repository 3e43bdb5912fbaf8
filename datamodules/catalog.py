"""The datasets lightning-fed knows and their facts (shape, classes, normalisation); no torch needed."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


INFO = {
    "fashion-mnist": DatasetInfo(1, 28, 10, (0.2860,), (0.3530,)),
    "mnist": DatasetInfo(1, 28, 10, (0.1307,), (0.3081,)),
    "mnist-5k": DatasetInfo(1, 28, 10, (0.1307,), (0.3081,)),
    "cifar10": DatasetInfo(3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": DatasetInfo(3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "gtsrb": DatasetInfo(3, 32, 43, (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)),
}
