"""Who takes part in a round: K of the N devices sampled, some of them failing to report.

Every process computes the same round from ``(seed, round)`` alone, so the schedule needs no
communication, is the same under any number of processes, and a resumed run continues it.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

SAMPLINGS = ("uniform", "weighted")


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


class RoundSchedule:
    """Samples ``devices_per_round`` of ``num_devices`` devices per round, without replacement.

    ``sampling="uniform"`` gives every device the same chance; ``"weighted"`` draws devices with
    probability proportional to ``weights`` (shard sizes). Each sampled device then fails to
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
        if self.sampling == "uniform":
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
        return weights / weights.sum()

    @property
    def full(self) -> bool:
        """Every device takes part and reports, every round (the paper's protocol)."""
        return self.devices_per_round == self.num_devices and self.failure_rate == 0

    def round(self, index: int) -> Round:
        """The devices of round ``index``, sorted."""
        if self.full:
            everyone = tuple(range(self.num_devices))
            return Round(index, everyone, everyone)
        rng = np.random.default_rng([self.seed, index, 0x5A4D])
        if self.devices_per_round == self.num_devices:
            sampled = np.arange(self.num_devices)
        else:
            sampled = rng.choice(
                self.num_devices, self.devices_per_round, replace=False, p=self.probabilities
            )
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
