"""``CommunicationMonitor``: log the communication ledger of the strategy."""

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from callbacks.traffic import dense_step_bytes, ledger_of

BYTES_AXIS = "comm/total/wire_bytes"


class CommunicationMonitor(pl.Callback):
    """Logs ``comm/step/*``, ``comm/total/*`` and ``comm/epoch/*`` from the strategy's ``ledger``.

    Under a strategy without a ledger (plain DDP, one device) it logs the dense traffic the
    parameter count implies (``comm/total/dense_bytes``), and says so once. Values are global
    (summed over devices), so logging from rank zero loses nothing. The totals are logged with
    every validation too, and on W&B ``val/*`` is declared against ``comm/total/wire_bytes``, so
    the dashboard plots accuracy against the bytes communicated.

    Args:
        logging_interval: log the step metrics every this many steps.
        bytes_axis: declare ``val/*`` against cumulative bytes on a W&B logger.

    Example::

        >>> CommunicationMonitor(logging_interval=10).logging_interval
        10
    """

    def __init__(self, logging_interval: int = 1, bytes_axis: bool = True) -> None:
        if (
            isinstance(logging_interval, bool)
            or not isinstance(logging_interval, int)
            or logging_interval < 1
        ):
            raise ValueError(f"logging_interval must be an integer >= 1, got {logging_interval!r}")
        if not isinstance(bytes_axis, bool):
            raise ValueError(f"bytes_axis must be True or False, got {bytes_axis!r}")
        self.logging_interval = logging_interval
        self.bytes_axis = bytes_axis
        self.dense_total_bytes = 0
        self._said = False

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not (self.bytes_axis and trainer.is_global_zero):
            return
        axis = BYTES_AXIS if ledger_of(trainer) is not None else "comm/total/dense_bytes"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.define_metric(axis)
                logger.experiment.define_metric("val/*", step_metric=axis)

    def totals(self, trainer: pl.Trainer) -> dict[str, float]:
        """The cumulative metrics: the ledger's, or the dense traffic counted here."""
        ledger = ledger_of(trainer)
        if ledger is None:
            return {"comm/total/dense_bytes": float(self.dense_total_bytes)}
        return ledger.total.metrics("comm/total")

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        ledger = ledger_of(trainer)
        if ledger is None:
            self.dense_total_bytes += dense_step_bytes(pl_module, trainer.world_size)
            if not self._said:
                rank_zero_info("CommunicationMonitor: no ledger on this strategy; logging dense traffic")
                self._said = True
        if trainer.global_step % self.logging_interval == 0:
            step = ledger.last_step.metrics("comm/step") if ledger is not None else {}
            pl_module.log_dict({**step, **self.totals(trainer)}, rank_zero_only=True)

    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:  # the x value of the val/* points on the bytes axis
            pl_module.log_dict(self.totals(trainer), rank_zero_only=True)

    @override
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        ledger = ledger_of(trainer)
        if ledger is not None and trainer.current_epoch in ledger.epochs:
            pl_module.log_dict(
                ledger.epochs[trainer.current_epoch].metrics("comm/epoch"), rank_zero_only=True
            )

    @override
    def state_dict(self) -> dict:
        return {"dense_total_bytes": self.dense_total_bytes}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.dense_total_bytes = state_dict.get("dense_total_bytes", 0)
