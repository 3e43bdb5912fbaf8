"""Who takes part in a round: K of the N devices sampled, some of them failing to report.

Every process computes the same round from ``(seed, round)`` alone, so the schedule needs no
communication, is the same under any number of processes, and a resumed run continues it.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

SAMPLINGS = ("uniform", "weighted", "poisson")


@dataclass(frozen=True)
class Round:
    """One round's devices: ``sampled`` (they receive the model) and ``reporting`` (they upload)."""

    index: int
    sampled: tuple[int, ...]
    reporting: tuple[int, ...]


def _check_count(name: str, value, low: int, high: int | None = None) -> int:
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integral or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return int(value)


def check_failure_rate(value) -> float:
    """A fraction of sampled devices that fail: a number in [0, 1).

    Example::

        >>> check_failure_rate(0.1)
        0.1
        >>> check_failure_rate(1)
        Traceback (most recent call last):
        ...
        ValueError: failure_rate must be a number in [0, 1), got 1
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 <= value < 1:
        raise ValueError(f"failure_rate must be a number in [0, 1), got {value!r}")
    return float(value)


def inclusion_probabilities(weights, k: int) -> np.ndarray:
    """Each device's chance to be among ``k`` drawn in proportion to ``weights``: ``k w_i / sum w``,
    capped at 1 (a device that would exceed 1 is always drawn, and the rest share the remaining
    draws in proportion to their weights). They sum to ``k``.

    Example::

        >>> inclusion_probabilities([10, 30, 60, 100], 2).tolist()
        [0.1, 0.3, 0.6, 1.0]
        >>> inclusion_probabilities([1, 1, 8], 2).tolist()  # 8 would be 1.6: capped, the rest share one draw
        [0.5, 0.5, 1.0]
    """
    weights = np.asarray(weights, dtype=np.float64)
    certain = np.zeros(len(weights), dtype=bool)
    while True:
        left = k - certain.sum()
        rest = np.where(certain, 0.0, weights)
        probabilities = np.where(certain, 1.0, left * rest / rest.sum())
        over = (probabilities > 1.0) & ~certain
        if not over.any():
            return probabilities
        certain |= over


def systematic_sample(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fixed-size sample whose inclusion probabilities are exactly ``probabilities`` (summing to
    an integer k): randomised systematic sampling (Madow 1949; the devices in a random order, one
    uniform start, every point ``u + j`` on their cumulative probabilities picks a device).

    Example::

        >>> p = np.array([0.5, 0.5, 1.0])
        >>> sorted(systematic_sample(p, np.random.default_rng(0)).tolist())  # device 2, and 0 or 1
        [0, 2]
    """
    order = rng.permutation(len(probabilities))
    edges = np.cumsum(probabilities[order])
    k = int(round(edges[-1]))
    points = rng.random() + np.arange(k)
    return order[np.minimum(np.searchsorted(edges, points, side="right"), len(order) - 1)]


class RoundSchedule:
    """Samples ``devices_per_round`` of ``num_devices`` devices per round, without replacement.

    ``sampling="uniform"`` draws exactly K, every device with the same chance; ``"poisson"``
    includes each device independently with probability K / N (K devices on average, some rounds
    none: the sampling that differential privacy's amplification theorem assumes,
    :mod:`lightning_fed.privacy`); ``"weighted"`` includes device i
    with probability proportional to its weight (shard size), ``K w_i / sum w`` capped at 1
    (:func:`inclusion_probabilities`), K devices every round (:func:`systematic_sample`). Then
    the plain mean of the sampled devices' updates is an unbiased estimate of the shard-size
    weighted mean over all devices (Horvitz-Thompson: ``n_i / pi_i`` is the same for every
    device), so weighted sampling goes with ``aggregation="mean"``. Each sampled device then fails to
    report with probability ``failure_rate`` (a straggler or a drop-out: it received the model,
    it sends nothing). Round ``r`` depends only on ``(seed, r)``.

    Example::

        >>> schedule = RoundSchedule(num_devices=10, devices_per_round=3, seed=0)
        >>> schedule.round(0).sampled, schedule.round(1).sampled  # a function of (seed, round) alone
        ((1, 2, 9), (2, 5, 7))
        >>> RoundSchedule(num_devices=10, devices_per_round=3, seed=0).round(1).sampled  # anywhere, any time
        (2, 5, 7)
        >>> RoundSchedule(num_devices=4).round(7).sampled
        (0, 1, 2, 3)
        >>> [len(RoundSchedule(1000, 50, "poisson").round(r).sampled) for r in range(4)]  # 50 on average
        [49, 55, 57, 43]
    """

    def __init__(
        self,
        num_devices: int,
        devices_per_round: int | None = None,
        sampling: str = "uniform",
        failure_rate: float = 0.0,
        seed: int = 0,
        weights=None,
    ) -> None:
        self.num_devices = _check_count("num_devices", num_devices, 1)
        per_round = self.num_devices if devices_per_round is None else devices_per_round
        self.devices_per_round = _check_count("devices_per_round", per_round, 1, self.num_devices)
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        self.sampling = sampling
        self.failure_rate = check_failure_rate(failure_rate)
        self.seed = int(seed)
        self.probabilities = self._probabilities(weights)

    def _probabilities(self, weights) -> np.ndarray | None:
        if self.sampling != "weighted":
            return None
        if weights is None:
            raise ValueError("sampling='weighted' needs weights (the devices' shard sizes)")
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (self.num_devices,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {self.num_devices} non-negative numbers, not all zero")
        if np.count_nonzero(weights) < self.devices_per_round:
            raise ValueError(
                f"only {np.count_nonzero(weights)} devices have weight, fewer than devices_per_round"
            )
        return inclusion_probabilities(weights, self.devices_per_round)

    @property
    def full(self) -> bool:
        """Every device takes part and reports, every round (the paper's protocol)."""
        return self.devices_per_round == self.num_devices and self.failure_rate == 0 and not self.poisson

    @property
    def poisson(self) -> bool:
        """Each device is drawn on its own, with probability K / N (K < N)."""
        return self.sampling == "poisson" and self.devices_per_round < self.num_devices

    def round(self, index: int) -> Round:
        """The devices of round ``index``, sorted."""
        if self.full:
            everyone = tuple(range(self.num_devices))
            return Round(index, everyone, everyone)
        rng = np.random.default_rng([self.seed, index, 0x5A4D])
        if self.poisson:
            sampled = np.flatnonzero(rng.random(self.num_devices) < self.devices_per_round / self.num_devices)
        elif self.devices_per_round == self.num_devices:
            sampled = np.arange(self.num_devices)
        elif self.probabilities is None:
            sampled = rng.choice(self.num_devices, self.devices_per_round, replace=False)
        else:
            sampled = systematic_sample(self.probabilities, rng)
        sampled = np.sort(sampled)
        failed = rng.random(len(sampled)) < self.failure_rate
        return Round(index, tuple(sampled.tolist()), tuple(sampled[~failed].tolist()))

    def rounds_per_epoch(self, batches_per_epoch: int, steps_per_round: float) -> int:
        """Rounds that, on average, take every training sample once: ``N * L / (K * H)``.

        ``batches_per_epoch`` (L) is an average device's batches in one pass over its shard,
        ``steps_per_round`` (H) the local steps of a sampled device. The paper's protocol (K = N,
        H = 1) gives L rounds, one per batch.

        Example::

            >>> RoundSchedule(1000, 50).rounds_per_epoch(batches_per_epoch=2, steps_per_round=2)
            20
        """
        rounds = self.num_devices * batches_per_epoch / (self.devices_per_round * steps_per_round)
        return max(1, math.ceil(rounds - 1e-9))
