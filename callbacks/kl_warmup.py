"""``KLWarmup``: schedule ``pl_module.kl_weight`` from a start value to an end value (1 by default)."""

import math

import pytorch_lightning as pl
from typing_extensions import override


class KLWarmup(pl.Callback):
    """Sets ``pl_module.kl_weight`` every training batch: ``start`` until ``delay``, then up to ``end``.

    Works with any module that has a ``kl_weight`` attribute. The schedule is in epochs (fractions
    of an epoch included) or, with ``unit="steps"``, in optimizer steps.

    Args:
        warmup: length of the ramp (0: weight ``end`` from the start, after ``delay``).
        delay: epochs (or steps) at ``start`` before the ramp begins.
        start: weight during the delay and at the start of the ramp.
        end: weight after the ramp: 1 is the ELBO; below 1 a beta-ELBO, which prunes less (the
            prior's pull is scaled by ``end``), for small training sets where the full KL
            term over-prunes.
        shape: ``"linear"`` or ``"cosine"``.
        unit: ``"epochs"`` or ``"steps"``.

    Example::

        >>> warmup = KLWarmup(warmup=10, delay=5)
        >>> [warmup.weight_at(e) for e in (0, 5, 10, 15, 20)]
        [0.0, 0.0, 0.5, 1.0, 1.0]
        >>> [KLWarmup(warmup=4, end=0.2).weight_at(e) for e in (0, 2, 4, 8)]
        [0.0, 0.1, 0.2, 0.2]
    """

    def __init__(
        self,
        warmup: float = 10,
        delay: float = 0,
        start: float = 0.0,
        shape="linear",
        unit="epochs",
        end: float = 1.0,
    ):
        for name, value in (("warmup", warmup), ("delay", delay)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(start, (int, float)) or not 0 <= start <= 1:
            raise ValueError(f"start must be a number in [0, 1], got {start!r}")
        if not isinstance(end, (int, float)) or not math.isfinite(end) or end < 0:
            raise ValueError(f"end must be a finite number >= 0, got {end!r}")
        if shape not in ("linear", "cosine"):
            raise ValueError(f"shape should be 'linear' or 'cosine', got {shape!r}")
        if unit not in ("epochs", "steps"):
            raise ValueError(f"unit should be 'epochs' or 'steps', got {unit!r}")
        self.warmup, self.delay, self.start, self.end = warmup, delay, start, end
        self.shape, self.unit = shape, unit
        self.last_weight = start

    def weight_at(self, progress: float) -> float:
        """The KL weight after ``progress`` epochs (or steps)."""
        if progress < self.delay:
            return float(self.start)
        ramp = 1.0 if self.warmup == 0 else min(1.0, (progress - self.delay) / self.warmup)
        if self.shape == "cosine":
            ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
        return float(self.start + (self.end - self.start) * ramp)

    def _progress(self, trainer: pl.Trainer, batch_idx: int) -> float:
        if self.unit == "steps":
            return float(trainer.global_step)
        batches = trainer.num_training_batches
        fraction = batch_idx / batches if batches and math.isfinite(batches) else 0.0
        return trainer.current_epoch + fraction

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if not hasattr(pl_module, "kl_weight"):
            raise AttributeError(f"KLWarmup needs a kl_weight attribute on {type(pl_module).__name__}")
        self.last_weight = self.weight_at(self._progress(trainer, batch_idx))
        pl_module.kl_weight = self.last_weight

    @override
    def state_dict(self) -> dict:
        return {"last_weight": self.last_weight}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.last_weight = state_dict.get("last_weight", self.start)
