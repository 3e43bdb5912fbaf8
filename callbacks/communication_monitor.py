"""``CommunicationMonitor``: log the communication ledger of the strategy."""

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override


def _dense_step_values(pl_module: pl.LightningModule, num_devices: int) -> int:
    """What dense distributed SGD moves per step: upload and download of every trainable parameter."""
    params = sum(
        p.numel() for n, p in pl_module.named_parameters() if p.requires_grad and "log_sigma2" not in n
    )
    return 2 * num_devices * params


class CommunicationMonitor(pl.Callback):
    """Logs ``comm/step/*``, ``comm/total/*`` and ``comm/epoch/*`` from the strategy's ``ledger``.

    Under a strategy without a ledger (plain DDP, one device) it logs the dense traffic the
    parameter count implies, and says so once. Values are global (summed over devices), so
    logging from rank zero loses nothing.

    Args:
        logging_interval: log the step metrics every this many steps.

    Example::

        >>> CommunicationMonitor(logging_interval=10).logging_interval
        10
    """

    def __init__(self, logging_interval: int = 1) -> None:
        if (
            isinstance(logging_interval, bool)
            or not isinstance(logging_interval, int)
            or logging_interval < 1
        ):
            raise ValueError(f"logging_interval must be an integer >= 1, got {logging_interval!r}")
        self.logging_interval = logging_interval
        self.dense_total_values = 0
        self._said = False

    @staticmethod
    def ledger_of(trainer: pl.Trainer):
        return getattr(trainer.strategy, "ledger", None)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        ledger = self.ledger_of(trainer)
        if ledger is None:
            self.dense_total_values += _dense_step_values(pl_module, trainer.world_size)
            if not self._said:
                rank_zero_info("CommunicationMonitor: no ledger on this strategy; logging dense traffic")
                self._said = True
            if trainer.global_step % self.logging_interval == 0:
                pl_module.log(
                    "comm/total/dense_bytes", float(self.dense_total_values * 4), rank_zero_only=True
                )
            return
        if trainer.global_step % self.logging_interval == 0:
            metrics = {**ledger.last_step.metrics("comm/step"), **ledger.total.metrics("comm/total")}
            pl_module.log_dict(metrics, rank_zero_only=True)

    @override
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        ledger = self.ledger_of(trainer)
        if ledger is not None and trainer.current_epoch in ledger.epochs:
            pl_module.log_dict(
                ledger.epochs[trainer.current_epoch].metrics("comm/epoch"), rank_zero_only=True
            )

    @override
    def state_dict(self) -> dict:
        return {"dense_total_values": self.dense_total_values}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.dense_total_values = state_dict.get("dense_total_values", 0)
