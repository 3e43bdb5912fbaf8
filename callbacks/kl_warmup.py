"""``KLWarmup``: schedule ``pl_module.kl_weight`` from a start value to an end value (1 by default),
and optionally down again to a last value once the model is pruned."""

import math

import pytorch_lightning as pl
from typing_extensions import override


class KLWarmup(pl.Callback):
    """Sets ``pl_module.kl_weight`` every training batch: ``start`` until ``delay``, then up to ``end``,
    and from ``decay_at`` on (if given) down to ``decay_to`` over ``decay``.

    Works with any module that has a ``kl_weight`` attribute. The schedule is in epochs (fractions
    of an epoch included) or, with ``unit="steps"``, in optimizer steps.

    The decay serves sparse variational dropout with alpha-thresholded gradient masking: once the
    KL term has pruned the model, a weaker prior lets the kept weights fit the data with less
    noise, while the pruned ones stay masked (their theta gradients are not sent).

    Args:
        warmup: length of the ramp (0: weight ``end`` from the start, after ``delay``).
        delay: epochs (or steps) at ``start`` before the ramp begins.
        start: weight during the delay and at the start of the ramp.
        end: weight after the ramp: 1 is the ELBO; below 1 a beta-ELBO, which prunes less (the
            prior's pull is scaled by ``end``), for small training sets where the full KL
            term over-prunes.
        shape: ``"linear"`` or ``"cosine"`` (both ramps).
        unit: ``"epochs"`` or ``"steps"``.
        decay_at: where the weight starts to fall from ``end`` (None: never); not before the end
            of the ramp (``delay + warmup``).
        decay: length of the fall (0: ``decay_to`` at once).
        decay_to: the weight after the fall.

    Example::

        >>> warmup = KLWarmup(warmup=10, delay=5)
        >>> [warmup.weight_at(e) for e in (0, 5, 10, 15, 20)]
        [0.0, 0.0, 0.5, 1.0, 1.0]
        >>> [KLWarmup(warmup=4, end=0.2).weight_at(e) for e in (0, 2, 4, 8)]
        [0.0, 0.1, 0.2, 0.2]
        >>> decaying = KLWarmup(warmup=2, end=0.3, decay_at=30, decay=10, decay_to=0.1)
        >>> [round(decaying.weight_at(e), 3) for e in (1, 2, 30, 35, 40, 60)]
        [0.15, 0.3, 0.3, 0.2, 0.1, 0.1]
    """

    def __init__(
        self,
        warmup: float = 10,
        delay: float = 0,
        start: float = 0.0,
        shape="linear",
        unit="epochs",
        end: float = 1.0,
        decay_at: float | None = None,
        decay: float = 0,
        decay_to: float = 0.0,
    ):
        for name, value in (("warmup", warmup), ("delay", delay), ("decay", decay)):
            if not _finite_at_least_0(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(start, (int, float)) or not 0 <= start <= 1:
            raise ValueError(f"start must be a number in [0, 1], got {start!r}")
        for name, value in (("end", end), ("decay_to", decay_to)):
            if not _finite_at_least_0(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if decay_at is not None and (not _finite_at_least_0(decay_at) or decay_at < delay + warmup):
            least = delay + warmup
            raise ValueError(
                f"decay_at must be None or a finite number >= delay + warmup ({least}), got {decay_at!r}"
            )
        if shape not in ("linear", "cosine"):
            raise ValueError(f"shape should be 'linear' or 'cosine', got {shape!r}")
        if unit not in ("epochs", "steps"):
            raise ValueError(f"unit should be 'epochs' or 'steps', got {unit!r}")
        self.warmup, self.delay, self.start, self.end = warmup, delay, start, end
        self.shape, self.unit = shape, unit
        self.decay_at, self.decay, self.decay_to = decay_at, decay, decay_to
        self.last_weight = start

    def weight_at(self, progress: float) -> float:
        """The KL weight after ``progress`` epochs (or steps)."""
        if progress < self.delay:
            return float(self.start)
        if self.decay_at is not None and progress >= self.decay_at:
            fall = self._shaped(progress - self.decay_at, self.decay)
            return float(self.end + (self.decay_to - self.end) * fall)
        ramp = self._shaped(progress - self.delay, self.warmup)
        return float(self.start + (self.end - self.start) * ramp)

    def _shaped(self, elapsed: float, length: float) -> float:
        """How far along a ramp of ``length`` (0 to 1), linear or cosine."""
        along = 1.0 if length == 0 else min(1.0, elapsed / length)
        return 0.5 - 0.5 * math.cos(math.pi * along) if self.shape == "cosine" else along

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


def _finite_at_least_0(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
