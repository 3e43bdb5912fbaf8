"""Top-k sparsification (Deep Gradient Compression's filter), with DGC's density warm-up.

:class:`TopK` keeps, of each tensor, the ``k = ceil(density * numel)`` entries of largest
magnitude and zeroes the rest; after ``M(alpha)`` it is a second filter (a tensor the mask
already thins below k entries passes whole). With ``warmup_steps`` the density starts at
``start_density`` and falls exponentially to ``density`` over those steps, as DGC warms up from
75 % to 99.9 % sparsity over its first epochs. What top-k drops is lost unless the device keeps
it as error feedback (``FederatedStrategy(error_feedback=True)``).

Example::

    >>> topk = TopK(0.5)
    >>> topk.filter(np.array([0.1, -3.0, 0.0, 2.0], dtype=np.float32), step=0).tolist()
    [0.0, -3.0, 0.0, 2.0]
    >>> warm = TopK(0.001, warmup_steps=100, start_density=0.25)
    >>> [round(warm.density_at(s), 4) for s in (0, 50, 100, 500)]
    [0.25, 0.0158, 0.001, 0.001]
"""

import math

import numpy as np


class TopK:
    """Keep the ``density`` fraction of each tensor's entries of largest magnitude.

    Args:
        density: the fraction kept, in (0, 1].
        warmup_steps: steps over which the density falls from ``start_density`` (0: none).
        start_density: the density at step 0 of the warm-up, in [density, 1] (with a warm-up).
    """

    lossy = True

    def __init__(self, density: float, warmup_steps: int = 0, start_density: float = 0.25) -> None:
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
            raise ValueError(f"topk density must be in (0, 1], got {density!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"topk warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if warmup_steps and not (isinstance(start_density, (int, float)) and density <= start_density <= 1):
            raise ValueError(f"topk start_density must be in [density={density}, 1], got {start_density!r}")
        self.density, self.warmup_steps = float(density), warmup_steps
        self.start_density = float(start_density)
        self.name = f"topk:{density:g}" + (f":{warmup_steps}" if warmup_steps else "")

    def density_at(self, step: int) -> float:
        """The density of step ``step``: exponential from ``start_density`` to ``density``."""
        if step >= self.warmup_steps:
            return self.density
        fraction = step / self.warmup_steps
        return self.start_density * (self.density / self.start_density) ** fraction

    def filter(self, values: np.ndarray, step: int) -> np.ndarray:
        """``values`` (flat float32) with all but its k largest magnitudes set to zero."""
        k = max(1, math.ceil(self.density_at(step) * values.size))
        if k >= values.size:
            return values
        magnitude = np.abs(values)
        if np.count_nonzero(magnitude) <= k:
            return values
        keep = np.argpartition(magnitude, values.size - k)[values.size - k :]
        out = np.zeros_like(values)
        out[keep] = values[keep]
        return out

    def __repr__(self) -> str:
        return self.name
