"""``last.ckpt``, the one checkpoint a run resumes from: every n steps, at every epoch end, at Ctrl-C."""

import signal
import threading
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

LAST = "last.ckpt"


class RunCheckpoint(Checkpoint):
    """Keeps ``dirpath/last.ckpt`` current, one file, always overwritten (no top-k copies beside it).

    Saved at the end of every training epoch (after validation) and, with ``every_n_steps``,
    after every n-th optimizer step, so a run killed mid-epoch loses at most n steps; the
    datamodule's loaders resume mid-epoch exactly (batch ``j`` is a pure function of the seed).
    Whether a half-written file can be left behind depends on the strategy's checkpoint IO:
    ``FederatedStrategy`` writes aside and renames (``AtomicCheckpointIO``).

    With ``stop_on_interrupt`` the first Ctrl-C (SIGINT) ends training after the step in progress:
    every process agrees on that step (``reduce_boolean_decision``), ``last.ckpt`` is saved there,
    and ``interrupted_at`` says where; a second Ctrl-C interrupts at once, as without it.

    Args:
        dirpath: the folder of ``last.ckpt``; None: ``checkpoints/`` in the trainer's
            ``default_root_dir``, decided at set-up (so ``--trainer.default_root_dir`` moves it).
        every_n_steps: also save after every n-th step; None or 0 saves at epoch ends only.
        stop_on_interrupt: catch the first SIGINT during ``fit`` (main thread only).

    Example::

        >>> checkpoint = RunCheckpoint("runs/a/checkpoints", every_n_steps=50)
        >>> checkpoint.path.as_posix(), checkpoint.every_n_steps
        ('runs/a/checkpoints/last.ckpt', 50)
        >>> RunCheckpoint("runs/a", every_n_steps=-1)
        Traceback (most recent call last):
        ...
        ValueError: every_n_steps must be an integer >= 0, got -1
        >>> RunCheckpoint().path
        Traceback (most recent call last):
        ...
        ValueError: RunCheckpoint(dirpath=None) has no folder before its trainer's set-up
    """

    def __init__(
        self, dirpath=None, every_n_steps: int | None = None, stop_on_interrupt: bool = False
    ) -> None:
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 0
        ):
            raise ValueError(f"every_n_steps must be an integer >= 0, got {every_n_steps!r}")
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.every_n_steps = every_n_steps or 0
        self.stop_on_interrupt = stop_on_interrupt
        self.interrupted_at: tuple[int, int] | None = None  # (epoch, global step) where Ctrl-C stopped fit
        self._signalled = False
        self._previous_handler = None

    @property
    def path(self) -> Path:
        if self.dirpath is None:
            raise ValueError("RunCheckpoint(dirpath=None) has no folder before its trainer's set-up")
        return self.dirpath / LAST

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "checkpoints"
        main_thread = threading.current_thread() is threading.main_thread()
        if stage == "fit" and self.stop_on_interrupt and main_thread:
            self._signalled, self.interrupted_at = False, None
            self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def _on_interrupt(self, signum, frame) -> None:
        if self._signalled:  # the second Ctrl-C: at once
            signal.signal(signal.SIGINT, self._previous_handler or signal.default_int_handler)
            raise KeyboardInterrupt
        self._signalled = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stop = self.stop_on_interrupt and trainer.strategy.reduce_boolean_decision(self._signalled, all=False)
        if stop or (self.every_n_steps and trainer.global_step % self.every_n_steps == 0):
            self._save(trainer)
        if stop:
            self.interrupted_at = (trainer.current_epoch, trainer.global_step)
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.interrupted_at is None:  # a stop mid-epoch keeps the checkpoint of where it stopped
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: a resume continues it
