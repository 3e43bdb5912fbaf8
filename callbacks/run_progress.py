"""A progress bar that says where the whole run is: epoch E of M, the run's ETA, kept weights,
validation accuracy and traffic so far."""

import time
from datetime import timedelta

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

SHORT_NAMES = {"sparsity/kept_fraction": "kept", "val/acc": "val_acc"}


def time_left(elapsed: float, done: int, total: int) -> str | None:
    """The rest of the run at the pace so far, as ``H:MM:SS`` (None before the first step).

    Example::

        >>> time_left(elapsed=90.0, done=10, total=40), time_left(5.0, done=0, total=40)
        ('0:04:30', None)
    """
    if done <= 0 or total <= 0:
        return None
    return str(timedelta(seconds=round(elapsed / done * max(total - done, 0))))


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar, telling a long run's user what they watch for.

    - the description ``epoch 2 (3/60)``: the epoch as the logs number it (from 0), then how many
      of the run's epochs this is;
    - ``run_eta``: the whole run's time left at this session's pace (steps done over the
      trainer's estimated steps);
    - ``kept`` and ``val_acc`` (the module's ``sparsity/kept_fraction`` and ``val/acc``), and
      ``traffic``, the wire bytes so far as a share of dense distributed SGD's, where the strategy
      keeps a ledger (``FederatedStrategy``); Lightning's ``v_num`` is left out.

    Example::

        >>> bar = RunProgressBar()
        >>> bar.describe(epoch=2, max_epochs=60)
        'epoch 2 (3/60)'
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._started: float | None = None
        self._first_step = self._total_steps = 0
        self._epoch_shown: int | None = None  # the epoch the bar describes

    @staticmethod
    def describe(epoch: int, max_epochs: int | None) -> str:
        if max_epochs is None or max_epochs < 0:
            return f"epoch {epoch}"
        return f"epoch {epoch} ({epoch + 1}/{max_epochs})"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._started, self._first_step = time.monotonic(), trainer.global_step
        self._total_steps = int(min(trainer.estimated_stepping_batches, 2**62))  # inf: no max_epochs
        self._epoch_shown = None

    def on_train_epoch_start(self, trainer: pl.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(self.describe(trainer.current_epoch, trainer.max_epochs))
        self._epoch_shown = trainer.current_epoch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self._epoch_shown != trainer.current_epoch:  # resumed: Lightning skipped the epoch's start hook
            self.resume_epoch(trainer, done=batch_idx)

    def resume_epoch(self, trainer: pl.Trainer, done: int) -> None:
        """The bar of an epoch resumed after ``done`` of its batches: its description and total as
        at the epoch's start, counting from ``done`` (so the rate counts this session's batches)."""
        bar = self.train_progress_bar
        total = self.total_train_batches
        bar.reset(total=None if total == float("inf") else total)
        bar.initial = bar.n = done
        bar.set_description(self.describe(trainer.current_epoch, trainer.max_epochs))
        self._epoch_shown = trainer.current_epoch

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        shown = {SHORT_NAMES.get(name, name): value for name, value in metrics.items()}
        total = getattr(getattr(trainer.strategy, "ledger", None), "total", None)
        if total is not None and total.dense_bytes:
            shown["traffic"] = f"{100 * total.wire_fraction:.1f}%"
        if self._started is not None:
            done, planned = trainer.global_step - self._first_step, self._total_steps - self._first_step
            left = time_left(time.monotonic() - self._started, done, planned)
            if left is not None:
                shown["run_eta"] = left
        return shown
