"""Devices that lie: seeded attackers and what they send, to test robust aggregation with.

A fraction of the devices, drawn once from the run's seed (:func:`choose_malicious`), are
attackers. An :class:`Attack` is the last stage of the uploads' way
(:mod:`lightning_fed.federation.stages`), just before the codec, so an attacker's message is
encoded, carried and counted like anyone's; on an honest device it passes the message on.

- ``sign_flip``: ``-u`` (the update reversed).
- ``scale:BOOST``: ``BOOST * u`` (model replacement, Bagdasaryan et al., AISTATS 2020).
- ``gaussian:SIGMA``: ``N(0, SIGMA^2)`` in every coordinate, seeded by run, device and step.
- ``label_flip``: the attacker trains on its shard with each label ``y`` read as ``C - 1 - y``
  and sends what it computed (data poisoning; its message is an honest computation).
- ``alie[:Z]``: "a little is enough" (Baruch, Baruch, Goldberg, NeurIPS 2019): ``mu - Z sigma``,
  the honest updates' coordinate-wise mean and standard deviation; by default ``Z`` is the
  paper's ``z_max`` for the round's ``n`` devices and ``f`` attackers
  (``s = floor(n / 2 + 1) - f``, ``Z = Phi^-1((n - s) / n)``).
- ``ipm[:EPS]``: inner-product manipulation (Xie, Koyejo, Gupta, UAI 2020): ``-EPS * mu``
  (default ``EPS = 0.1``).

The last two are omniscient, as their papers assume: the attackers see the round's honest
updates (as they reach this stage) before they send, so the host runs a round's honest devices
first, all in one process.

Example::

    >>> choose_malicious(num_devices=10, fraction=0.2, seed=0)
    [0, 4]
    >>> make_attack("scale:10", malicious=[0, 4])
    Scale(10, devices [0, 4])
"""

import math
from statistics import NormalDist

import numpy as np
import torch

from lightning_fed.federation.stages import Stage

ATTACKS = "sign_flip, scale:BOOST, gaussian:SIGMA, label_flip, alie[:Z], ipm[:EPS]"


def choose_malicious(num_devices: int, fraction: float, seed: int) -> list[int]:
    """The attackers: ``round(fraction * num_devices)`` devices drawn from ``seed``, sorted."""
    count = round(fraction * num_devices)
    rng = np.random.default_rng([seed % 2**63, 0xA77AC])
    return sorted(int(d) for d in rng.choice(num_devices, size=count, replace=False))


class Attack(Stage):
    """An attackers' stage: ``forge`` replaces what a device in ``malicious`` sends."""

    omniscient = False  # forges from the round's honest updates
    poisons_data = False  # forges the data it trains on, not the message

    def __init__(self, malicious) -> None:
        self.malicious = frozenset(int(d) for d in malicious)
        self._reporting: list[int] = []  # the round's reporting devices
        self._honest: list[list[torch.Tensor]] = []

    def _args(self) -> str:
        return ""

    def __repr__(self) -> str:
        args = self._args()
        return f"{type(self).__name__}({args}{', ' if args else ''}devices {sorted(self.malicious)})"

    def begin_round(self, step: int, reporting: list[int]) -> None:
        """The round's reporting devices, before any of them sends."""
        self._reporting, self._honest = list(reporting), []

    def order(self, devices: list[int]) -> list[int]:
        """The order the host runs ``devices`` in: honest first when the attack must see them."""
        return sorted(devices, key=lambda d: d in self.malicious) if self.omniscient else list(devices)

    def __call__(self, tensors, sending, rest):
        if sending.sender not in self.malicious:
            if self.omniscient:
                self._honest.append([t.detach().clone() for t in tensors])
            return rest(tensors)
        return rest(self.forge(tensors, sending))

    def forge(self, tensors: list[torch.Tensor], sending) -> list[torch.Tensor]:
        return tensors

    num_classes: int | None = None  # of the labels, for data poisoning

    def poison(self, batch, num_classes: int):
        """The batch an attacker trains on (unchanged but for data poisoning)."""
        return batch

    def poisoned(self, device: int, batches: list) -> list:
        """``device``'s batches as it trains on them: poisoned if it attacks so."""
        if not (self.poisons_data and device in self.malicious):
            return batches
        return [self.poison(batch, self.num_classes) for batch in batches]


class SignFlip(Attack):
    def forge(self, tensors, sending):
        return [-t for t in tensors]


class Scale(Attack):
    def __init__(self, malicious, boost: float) -> None:
        super().__init__(malicious)
        if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not math.isfinite(boost):
            raise ValueError(f"scale's BOOST must be a finite number, got {boost!r}")
        self.boost = boost

    def _args(self) -> str:
        return f"{self.boost:g}"

    def forge(self, tensors, sending):
        return [self.boost * t for t in tensors]


class Gaussian(Attack):
    def __init__(self, malicious, sigma: float) -> None:
        super().__init__(malicious)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < math.inf:
            raise ValueError(f"gaussian's SIGMA must be a finite number > 0, got {sigma!r}")
        self.sigma = float(sigma)

    def _args(self) -> str:
        return f"{self.sigma:g}"

    def forge(self, tensors, sending):
        seed = sending.seed if isinstance(sending.seed, tuple) else (sending.seed,)
        words = np.random.SeedSequence([int(part) % 2**63 for part in seed] + [0x6A55]).generate_state(2)
        generator = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
        return [self.sigma * torch.randn(t.shape, generator=generator).to(t) for t in tensors]


class LabelFlip(Attack):
    poisons_data = True

    def poison(self, batch, num_classes: int):
        x, y = batch[0], batch[1]
        return (x, num_classes - 1 - y, *batch[2:])


class ALittleIsEnough(Attack):
    omniscient = True

    def __init__(self, malicious, z: float | None = None) -> None:
        super().__init__(malicious)
        if z is not None and (isinstance(z, bool) or not isinstance(z, (int, float)) or not math.isfinite(z)):
            raise ValueError(f"alie's Z must be a finite number, got {z!r}")
        self.z = z

    def _args(self) -> str:
        return "" if self.z is None else f"{self.z:g}"

    def z_of_round(self) -> float:
        """``Z``, or the paper's ``z_max`` for the round's ``n`` devices and ``f`` attackers."""
        if self.z is not None:
            return self.z
        reporting = self._reporting
        n, f = len(reporting), sum(d in self.malicious for d in reporting)
        s = math.floor(n / 2 + 1) - f
        return NormalDist().inv_cdf(min(max((n - s) / n, 1e-6), 1 - 1e-6))

    def forge(self, tensors, sending):
        if not self._honest:  # no honest update to hide among: send nothing
            return [torch.zeros_like(t) for t in tensors]
        z, out = self.z_of_round(), []
        for i, t in enumerate(tensors):
            honest = torch.stack([update[i].to(t) for update in self._honest])
            sigma = honest.std(0, unbiased=False) if len(self._honest) > 1 else torch.zeros_like(t)
            out.append(honest.mean(0) - z * sigma)
        return out


class InnerProductManipulation(Attack):
    omniscient = True

    def __init__(self, malicious, eps: float = 0.1) -> None:
        super().__init__(malicious)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
            raise ValueError(f"ipm's EPS must be a finite number > 0, got {eps!r}")
        self.eps = float(eps)

    def _args(self) -> str:
        return f"{self.eps:g}"

    def forge(self, tensors, sending):
        if not self._honest:
            return [torch.zeros_like(t) for t in tensors]
        return [
            -self.eps * torch.stack([u[i].to(t) for u in self._honest]).mean(0) for i, t in enumerate(tensors)
        ]


def attack_of(config, num_devices: int, seed: int, processes: int, trainer=None) -> Attack | None:
    """The run's attack (None: nobody attacks), its attackers drawn from ``seed``; a one-line error
    where it cannot run (an omniscient attack over several processes; label flipping without a
    known number of classes)."""
    if config.attack is None:
        return None
    attack = make_attack(config.attack, choose_malicious(num_devices, config.malicious_fraction, seed))
    if attack.omniscient and processes > 1:
        raise ValueError(
            f"attack={config.attack!r} sees the round's honest updates before it sends, so it runs in one "
            f"process; got {processes}"
        )
    if attack.poisons_data:
        info = getattr(getattr(trainer, "datamodule", None), "info", None)
        hparams = getattr(getattr(trainer, "lightning_module", None), "hparams", {})
        attack.num_classes = getattr(info, "num_classes", None) or hparams.get("num_classes")
        if attack.num_classes is None:
            raise ValueError(f"attack={config.attack!r} needs the number of classes (a FederatedDataModule)")
    return attack


def make_attack(spec: str, malicious, option: str = "attack") -> Attack:
    """The attack of ``spec`` (``"sign_flip"``, ``"scale:10"``, ...) by the devices ``malicious``."""
    name, *args = str(spec).split(":")
    try:
        numbers = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"{option} {spec!r}: {spec!r} has a value that is not a number") from None
    builders = {
        ("sign_flip", 0): SignFlip, ("scale", 1): Scale, ("gaussian", 1): Gaussian,
        ("label_flip", 0): LabelFlip, ("alie", 0): ALittleIsEnough, ("alie", 1): ALittleIsEnough,
        ("ipm", 0): InnerProductManipulation, ("ipm", 1): InnerProductManipulation,
    }  # fmt: skip
    build = builders.get((name, len(numbers)))
    if build is None:
        raise ValueError(f"{option} {spec!r}: unknown or malformed; attacks are {ATTACKS}")
    try:
        return build(malicious, *numbers)
    except ValueError as error:
        raise ValueError(f"{option} {spec!r}: {error}") from None
