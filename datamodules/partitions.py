"""Partitions of a training set into N non-overlapping device shards.

iid (equal or log-normal sizes), Dirichlet label skew, McMahan's label shards, pathological
(k classes per device), size skew (power-law or exponential sizes), and the natural partition of
a data set whose samples already belong to someone (Shakespeare's speaking roles).

A partition is a small seeded object: it computes the index map once, on first use, and hands
out the indices of a device by index. Every partition reports its per-device label histogram.
"""

import numpy as np

from datamodules.checks import check_count, check_number


class Partition:
    """Base class: ``labels`` of the training set, ``num_devices``, ``seed``; subclasses build the map."""

    name = "base"

    def __init__(self, labels, num_devices: int, seed: int = 0) -> None:
        self.labels = np.asarray(labels)
        self.num_devices = check_count("num_devices", num_devices)
        if self.num_devices > len(self.labels):
            raise ValueError(
                f"num_devices={num_devices} exceeds the {len(self.labels)} training samples; "
                f"use at most {len(self.labels)} devices"
            )
        self.seed = seed
        self._shards: list[np.ndarray] | None = None

    def _build(self, rng: np.random.Generator) -> list[np.ndarray]:
        raise NotImplementedError

    @property
    def shards(self) -> list[np.ndarray]:
        """The index arrays of all devices, computed once."""
        if self._shards is None:
            self._shards = [
                np.sort(s).astype(np.int64) for s in self._build(np.random.default_rng(self.seed))
            ]
        return self._shards

    def indices(self, device: int) -> np.ndarray:
        """Indices (into ``labels``) of the shard of ``device``."""
        if not 0 <= device < self.num_devices:
            raise ValueError(f"device must be in [0, {self.num_devices - 1}], got {device!r}")
        return self.shards[device]

    def sizes(self) -> list[int]:
        return [len(shard) for shard in self.shards]

    def label_histogram(self, num_classes: int | None = None) -> np.ndarray:
        """``[num_devices, num_classes]`` count of each label on each device."""
        num_classes = num_classes or int(self.labels.max()) + 1
        return np.stack([np.bincount(self.labels[s], minlength=num_classes) for s in self.shards])


class IidPartition(Partition):
    """The paper's partition: random, non-overlapping, equal sizes (or log-normal unequal sizes).

    Args:
        unequal_sigma: 0 for equal sizes; > 0 draws sizes from a log-normal with this sigma.

    Example::

        >>> part = IidPartition(np.arange(10) % 2, num_devices=3, seed=0)
        >>> part.sizes()
        [4, 3, 3]
    """

    name = "iid"

    def __init__(self, labels, num_devices: int, seed: int = 0, unequal_sigma: float = 0.0) -> None:
        super().__init__(labels, num_devices, seed)
        self.unequal_sigma = check_number("unequal_sigma", unequal_sigma)

    def _build(self, rng):
        order = rng.permutation(len(self.labels))
        if self.unequal_sigma == 0:
            return np.array_split(order, self.num_devices)
        weights = rng.lognormal(0.0, self.unequal_sigma, self.num_devices)
        sizes = np.maximum(1, np.floor(weights / weights.sum() * len(order)).astype(int))
        sizes[np.argmax(sizes)] += len(order) - sizes.sum()
        return np.split(order, np.cumsum(sizes)[:-1])


class DirichletPartition(Partition):
    """Label skew: the share of each class across devices is drawn from Dirichlet(alpha).

    Small alpha gives devices few classes; large alpha approaches iid. Draws again (up to 100
    times) until every device has at least ``min_size`` samples.

    Example::

        >>> part = DirichletPartition(np.arange(100) % 2, num_devices=2, alpha=1000.0)
        >>> part.label_histogram().tolist()
        [[24, 24], [26, 26]]
    """

    name = "dirichlet"

    def __init__(self, labels, num_devices: int, seed: int = 0, alpha: float = 0.5, min_size: int = 1):
        super().__init__(labels, num_devices, seed)
        self.alpha = check_number("Dirichlet alpha", alpha, positive=True)
        self.min_size = check_count("min_size", min_size)

    def _draw(self, rng) -> list[np.ndarray]:
        shards: list[list[np.ndarray]] = [[] for _ in range(self.num_devices)]
        for label in np.unique(self.labels):
            members = rng.permutation(np.flatnonzero(self.labels == label))
            shares = rng.dirichlet(np.full(self.num_devices, self.alpha))
            cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
            for device, part in enumerate(np.split(members, cuts)):
                shards[device].append(part)
        return [np.concatenate(parts) for parts in shards]

    def _build(self, rng):
        for _ in range(100):
            shards = self._draw(rng)
            if min(len(s) for s in shards) >= self.min_size:
                return shards
        raise ValueError(
            f"Dirichlet alpha={self.alpha} left a device with fewer than {self.min_size} samples "
            f"in 100 draws; use a larger alpha or fewer devices"
        )


class ShardPartition(Partition):
    """McMahan et al.: sort by label, cut into ``num_shards`` equal shards, give each device an equal number.

    Samples beyond ``num_shards * shard_size`` are left out.

    Example::

        >>> labels = np.repeat(np.arange(4), 5)
        >>> part = ShardPartition(labels, num_devices=2, num_shards=4)
        >>> part.sizes(), [len(set(labels[s])) for s in part.shards]
        ([10, 10], [2, 2])
    """

    name = "shards"

    def __init__(self, labels, num_devices: int, seed: int = 0, num_shards: int | None = None):
        super().__init__(labels, num_devices, seed)
        num_shards = 2 * self.num_devices if num_shards is None else num_shards
        self.num_shards = check_count("num_shards", num_shards)
        if self.num_shards % self.num_devices:
            raise ValueError(
                f"num_shards={self.num_shards} does not divide among {self.num_devices} devices; "
                f"use a multiple of {self.num_devices}"
            )
        if self.num_shards > len(self.labels):
            raise ValueError(f"num_shards={self.num_shards} exceeds the {len(self.labels)} samples")

    def _build(self, rng):
        size = len(self.labels) // self.num_shards
        by_label = np.argsort(self.labels, kind="stable")[: size * self.num_shards]
        pieces = by_label.reshape(self.num_shards, size)
        order = rng.permutation(self.num_shards).reshape(self.num_devices, -1)
        return [pieces[row].reshape(-1) for row in order]


class PathologicalPartition(Partition):
    """Pathological label skew: every device holds exactly ``classes_per_device`` classes.

    The classes are dealt round-robin over a seeded class order, so every class is held by at
    least one device when ``num_devices * classes_per_device >= classes``; each class's samples
    are split evenly among the devices that hold it.

    Example::

        >>> part = PathologicalPartition(np.repeat(np.arange(4), 6), num_devices=4, classes_per_device=2)
        >>> part.sizes(), (part.label_histogram() > 0).sum(axis=1).tolist()
        ([6, 6, 6, 6], [2, 2, 2, 2])
    """

    name = "pathological"

    def __init__(self, labels, num_devices: int, seed: int = 0, classes_per_device: int = 2):
        super().__init__(labels, num_devices, seed)
        classes = len(np.unique(self.labels))
        self.classes_per_device = check_count("classes_per_device", classes_per_device)
        if self.classes_per_device > classes:
            raise ValueError(
                f"classes_per_device={classes_per_device} exceeds the {classes} classes of the data"
            )
        if self.num_devices * self.classes_per_device < classes:
            raise ValueError(
                f"{self.num_devices} devices x classes_per_device={classes_per_device} leave some of the "
                f"{classes} classes on no device; use classes_per_device >= {-(-classes // self.num_devices)}"
            )

    def _build(self, rng):
        classes = rng.permutation(np.unique(self.labels))
        holders: dict[int, list[int]] = {int(c): [] for c in classes}
        for device in range(self.num_devices):
            for j in range(self.classes_per_device):
                label = classes[(device * self.classes_per_device + j) % len(classes)]
                holders[int(label)].append(device)
        shards: list[list[np.ndarray]] = [[] for _ in range(self.num_devices)]
        for label, devices in holders.items():
            members = rng.permutation(np.flatnonzero(self.labels == label))
            for device, part in zip(devices, np.array_split(members, len(devices)), strict=True):
                shards[device].append(part)
        shards = [np.concatenate(parts) for parts in shards]
        if min(len(s) for s in shards) == 0:
            raise ValueError("a class has fewer samples than devices holding it; use fewer devices")
        return shards


class SizeSkewPartition(Partition):
    """Size skew: iid samples, shard sizes falling as a power law or exponentially with rank.

    Sizes are proportional to ``(rank + 1) ** -exponent`` (``power-law``) or
    ``exp(-exponent * rank / num_devices)`` (``exponential``), every device getting at least one
    sample; which device gets which rank is seeded.

    Example::

        >>> part = SizeSkewPartition(np.zeros(100), num_devices=4, distribution="power-law", seed=0)
        >>> sorted(part.sizes(), reverse=True), sum(part.sizes())
        ([48, 24, 16, 12], 100)
    """

    name = "sizeskew"
    DISTRIBUTIONS = ("power-law", "exponential")

    def __init__(
        self, labels, num_devices: int, seed: int = 0, distribution: str = "power-law", exponent: float = 1.0
    ):
        super().__init__(labels, num_devices, seed)
        if distribution not in self.DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {', '.join(self.DISTRIBUTIONS)}, got {distribution!r}"
            )
        self.distribution = distribution
        self.exponent = check_number("size-skew exponent", exponent, positive=True)

    def _build(self, rng):
        ranks = np.arange(self.num_devices, dtype=np.float64)
        if self.distribution == "power-law":
            weights = (ranks + 1) ** -self.exponent
        else:
            weights = np.exp(-self.exponent * ranks / self.num_devices)
        spare = len(self.labels) - self.num_devices  # one sample each, the rest by weight
        sizes = 1 + np.floor(weights / weights.sum() * spare).astype(int)
        sizes[0] += len(self.labels) - sizes.sum()
        sizes = sizes[rng.permutation(self.num_devices)]
        return np.split(rng.permutation(len(self.labels)), np.cumsum(sizes)[:-1])


class NaturalPartition(Partition):
    """The data set's own devices: ``groups[i]`` is the device sample ``i`` belongs to (a speaking
    role). With fewer devices than groups, a seeded choice of ``num_devices`` groups, in order;
    the other groups' samples are in no shard.

    Example::

        >>> NaturalPartition(np.zeros(6), 3, groups=[0, 0, 1, 2, 2, 2]).shards
        [array([0, 1]), array([2]), array([3, 4, 5])]
        >>> len(NaturalPartition(np.zeros(6), 2, groups=[0, 0, 1, 2, 2, 2]).shards)  # 2 of the 3, seeded
        2
    """

    name = "natural"

    def __init__(self, labels, num_devices: int, seed: int = 0, groups=None) -> None:
        super().__init__(labels, num_devices, seed)
        if groups is None:
            raise ValueError("partition 'natural' needs a naturally partitioned dataset (shakespeare)")
        self.groups = np.asarray(groups)
        available = int(self.groups.max()) + 1 if len(self.groups) else 0
        if self.num_devices > available:
            raise ValueError(
                f"num_devices={num_devices} exceeds the data set's {available} natural devices; "
                f"use at most {available} devices"
            )

    def _build(self, rng):
        available = int(self.groups.max()) + 1
        chosen = (
            range(available)
            if self.num_devices == available
            else rng.choice(available, self.num_devices, replace=False)
        )
        order = np.argsort(self.groups, kind="stable")
        starts = np.searchsorted(self.groups[order], np.arange(available + 1))
        return [order[starts[g] : starts[g + 1]] for g in sorted(chosen)]


PARTITIONS = {
    cls.name: cls
    for cls in (
        IidPartition, DirichletPartition, ShardPartition, PathologicalPartition, SizeSkewPartition,
        NaturalPartition,
    )
}  # fmt: skip


def make_partition(name: str, labels, num_devices: int, seed: int = 0, **params) -> Partition:
    """Build a partition by name (one of :data:`PARTITIONS`) with its own parameters.

    Example::

        >>> make_partition("iid", np.zeros(8), 4).sizes()
        [2, 2, 2, 2]
    """
    if name not in PARTITIONS:
        raise ValueError(f"unknown partition {name!r}; choose one of {', '.join(PARTITIONS)}")
    return PARTITIONS[name](labels, num_devices, seed, **params)
