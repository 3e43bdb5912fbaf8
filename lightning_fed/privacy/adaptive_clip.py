"""Adaptive clipping: the clip follows a target quantile of the update norms (Andrew, Thakkar, McMahan,
Ramaswamy, "Differentially Private Learning with Adaptive Clipping", NeurIPS 2021).

Each reporting device also sends one bit, whether its update's norm was within the clip C (a
``clip_bit`` message of its own, encoded and counted in the ledger like any other). The server
noises the bits' sum with standard deviation ``sigma_b``, divides by the expected number of
reporting devices and moves the clip geometrically towards the target quantile gamma:

    C <- C * exp(-eta * (noised fraction within C - gamma))

The count is a second Gaussian mechanism on the same devices, so the update's noise multiplier
rises to keep the pair's guarantee that of one Gaussian mechanism with multiplier sigma (the
paper's Theorem 1): ``sigma_update = (sigma^-2 - (2 sigma_b)^-2)^(-1/2)``, which needs
``sigma_b > sigma / 2``. The accountant then accounts sigma, unchanged.

Example::

    >>> from lightning_fed.privacy.clipping import ClipBound
    >>> bound = ClipBound(1.0)
    >>> clip = AdaptiveClip(bound, target_quantile=0.5, learning_rate=0.2, count_noise=0.0, expected=10,
    ...                     seed=0)
    >>> clip.update(within=10.0, step=0)  # every update within C: the clip shrinks
    >>> round(bound.value, 4)  # exp(-0.2 * (1 - 0.5))
    0.9048
    >>> round(update_noise_multiplier(1.0, count_noise=2.5), 4)  # the updates' share of sigma = 1
    1.0206
"""

import math

import numpy as np

COUNT = 0x434C4950  # the count noise's place in a round's seed: (run seed, COUNT, round)


def update_noise_multiplier(noise_multiplier: float, count_noise: float) -> float:
    """The updates' noise multiplier that, with the bits' count noised by ``count_noise``, spends what
    one Gaussian mechanism of ``noise_multiplier`` does; a one-line error when the count's noise is
    too small to leave the updates any (it must exceed ``noise_multiplier / 2``)."""
    if noise_multiplier == 0:
        return 0.0
    if count_noise <= noise_multiplier / 2:
        raise ValueError(
            f"dp_count_noise={count_noise:g} must exceed half the noise multiplier "
            f"({noise_multiplier / 2:g}): the clip count's noise spends the rest of the budget"
        )
    return (noise_multiplier**-2 - (2 * count_noise) ** -2) ** -0.5


class AdaptiveClip:
    """Moves ``bound`` (a :class:`~lightning_fed.privacy.clipping.ClipBound`) after each round."""

    def __init__(
        self, bound, target_quantile: float, learning_rate: float, count_noise: float, expected: float,
        seed: int,
    ) -> None:  # fmt: skip
        self.bound, self.target_quantile, self.learning_rate = (
            bound,
            float(target_quantile),
            float(learning_rate),
        )
        self.count_noise, self.expected, self.seed = float(count_noise), float(expected), int(seed)

    def update(self, within: float | None, step: int) -> None:
        """Round ``step``'s count of updates ``within`` the clip (None: nobody reported), noised."""
        rng = np.random.default_rng([self.seed, COUNT, step])
        noised = (
            (within or 0.0) + float(rng.normal(0.0, self.count_noise))
            if self.count_noise
            else (within or 0.0)
        )
        fraction = noised / self.expected
        self.bound.value *= math.exp(-self.learning_rate * (fraction - self.target_quantile))
