"""The server's side of DP-FedAvg: Gaussian noise on the sum of the clipped uploads, a fixed denominator.

The server adds ``N(0, (sigma C)^2)`` to every noised coordinate of the round's sum and divides
by the expected number of reporting devices, not the number that reported (McMahan et al. 2018:
a fixed denominator keeps the sensitivity of the average at ``C / expected``). Which coordinates
are noised: every one the devices may send. Under Algorithm 1 that is the public mask
``M(alpha)``'s kept weights (and every coordinate of the tensors it does not mask): a pruned
weight is sent by nobody, so its sum is known to be zero and needs no noise. The noise is drawn
from ``(seed, round)``: the same run gives the same noise (a deployment keeps that seed secret).

Example::

    >>> import torch
    >>> noise = GaussianNoise(noise_multiplier=0.0, clip=1.0, seed=0)
    >>> average = noise.noised_average([torch.tensor([2.0, 4.0])], [2], expected=4.0, keeps=None, step=0)
    >>> average[0].tolist()  # no noise: the sum over the expected four devices
    [0.5, 1.0]
"""

import numpy as np
import torch

NOISE = 0x44500  # the noise's place in a round's seed: (run seed, NOISE, round)


class GaussianNoise:
    """``N(0, (noise_multiplier * clip)^2)`` per noised coordinate of a round's sum, seeded by round."""

    def __init__(self, noise_multiplier: float, clip, seed: int) -> None:
        self.noise_multiplier, self.seed = float(noise_multiplier), int(seed)
        self.clip = clip  # a number, or anything with a ``value`` (a clip bound that moves)

    @property
    def std(self) -> float:
        """The noise's standard deviation on the sum: ``sigma * C``."""
        return self.noise_multiplier * float(getattr(self.clip, "value", self.clip))

    def draw(
        self, numels: list[int], keeps: list[torch.Tensor | None] | None, step: int
    ) -> list[torch.Tensor]:
        """Round ``step``'s noise, one flat float32 tensor per uploaded tensor, zero where ``keeps``
        (per tensor the public mask; None: every coordinate noised) prunes."""
        keeps = keeps if keeps is not None else [None] * len(numels)
        seed = np.random.SeedSequence([self.seed, NOISE, step]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        noise = []
        for numel, keep in zip(numels, keeps, strict=True):
            draw = torch.randn(numel, generator=generator, dtype=torch.float32) * self.std
            noise.append(draw if keep is None else draw * keep.reshape(-1).to(torch.float32))
        return noise

    def noised_average(
        self,
        total: list[torch.Tensor] | None,
        numels: list[int],
        expected: float,
        keeps: list[torch.Tensor | None] | None,
        step: int,
    ) -> list[torch.Tensor]:
        """``(total + noise) / expected``; ``total`` None (nobody reported) is a sum of zeros."""
        noise = self.draw(numels, keeps, step)
        if total is None:
            return [n / expected for n in noise]
        return [(t + n.to(t.device).view_as(t)) / expected for t, n in zip(total, noise, strict=True)]
