"""The datasets lightning-fed knows and their facts (shape, classes, normalisation); no torch needed."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """A data set's image shape, classes, normalisation, and the validation samples held out of its
    training set unless the caller says otherwise (a tenth of a small set, 5,000 of a large one).

    Example::

        >>> INFO["mnist-5k"].val_size, INFO["fashion-mnist"].val_size
        (500, 5000)
    """

    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_size: int = 5000
    kind: str = "image"  # or "text": windows of character indices and the next character
    partition: str = "iid"  # the default partition


INFO = {
    "fashion-mnist": DatasetInfo(1, 28, 10, (0.2860,), (0.3530,)),
    "mnist": DatasetInfo(1, 28, 10, (0.1307,), (0.3081,)),
    "mnist-5k": DatasetInfo(1, 28, 10, (0.1307,), (0.3081,), val_size=500),
    "cifar10": DatasetInfo(3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": DatasetInfo(3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "gtsrb": DatasetInfo(3, 32, 43, (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)),
    # by speaking role (datamodules.shakespeare): size is the default window, 81 characters; its
    # validation part is each role's text by position (val_size 0 turns it off, any other keeps it)
    "shakespeare": DatasetInfo(1, 80, 81, (0.0,), (1.0,), val_size=1, kind="text", partition="natural"),
}
LABEL_PARTITIONS = ("dirichlet", "shards", "pathological")  # meaningless for text
