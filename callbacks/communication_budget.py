"""``CommunicationBudget``: stop training once the cumulative traffic passes a byte budget."""

import math

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from callbacks.traffic import dense_step_bytes, ledger_of

MEASURES = ("wire", "paper")


class CommunicationBudget(pl.Callback):
    """Stops the fit after the step at which the cumulative traffic reaches ``max_bytes``.

    Traffic is read from the strategy's ledger (``wire``: the payloads' bytes, headers and
    positions included; or the paper's ``paper`` measure, 4 bytes per value), or, under a
    strategy without a ledger, counted here as the dense traffic the parameter count implies.
    All ranks agree on the decision (a rank stopping alone would leave the others waiting in a
    collective).

    Args:
        max_bytes: the budget, in bytes (> 0).
        measure: ``"wire"`` or ``"paper"``.

    Example::

        >>> budget = CommunicationBudget(max_bytes=2**30)
        >>> budget.max_bytes, budget.measure, budget.spent_bytes
        (1073741824, 'wire', 0)
    """

    def __init__(self, max_bytes: float, measure: str = "wire") -> None:
        if (
            isinstance(max_bytes, bool)
            or not isinstance(max_bytes, (int, float))
            or not math.isfinite(max_bytes)
            or max_bytes <= 0
        ):
            raise ValueError(f"max_bytes must be a finite number of bytes > 0, got {max_bytes!r}")
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
        self.max_bytes, self.measure = max_bytes, measure
        self.spent_bytes = 0
        self.stopped_step: int | None = None

    def _spent(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        ledger = ledger_of(trainer)
        if ledger is None:
            return self.spent_bytes + dense_step_bytes(pl_module, trainer.world_size)
        return getattr(ledger.total, f"{self.measure}_bytes")

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.spent_bytes = self._spent(trainer, pl_module)
        exceeded = trainer.strategy.reduce_boolean_decision(self.spent_bytes >= self.max_bytes, all=False)
        if exceeded and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_step = trainer.global_step
            rank_zero_info(
                f"CommunicationBudget: {self.spent_bytes:,} bytes ({self.measure}) reached the budget of "
                f"{self.max_bytes:,.0f} at step {trainer.global_step}; stopping"
            )
        pl_module.log("comm/budget_used", self.spent_bytes / self.max_bytes, rank_zero_only=True)

    @override
    def state_dict(self) -> dict:
        return {"spent_bytes": self.spent_bytes, "stopped_step": self.stopped_step}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.spent_bytes = state_dict.get("spent_bytes", 0)
        self.stopped_step = state_dict.get("stopped_step")
