"""The progress bar of a run: epoch E of M, kept weights, validation accuracy, traffic, ETA."""

import pytest
import pytorch_lightning as pl

from callbacks import RunCheckpoint, RunProgressBar
from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from modules.classifier import SparseVDClassifier
from tests.conftest import N_TRAIN


def test_the_bar_shows_the_epoch_of_the_run_kept_accuracy_traffic_and_eta_without_v_num(data_dir):
    pl.seed_everything(0, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=32, data_dir=data_dir, val_size=64)
    bar = RunProgressBar()
    strategy = FederatedStrategy()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_epochs=2, limit_train_batches=2,
        limit_val_batches=1, callbacks=[bar], enable_checkpointing=False, enable_model_summary=False,
        logger=pl.loggers.CSVLogger(data_dir / "logs"),
    )  # fmt: skip
    module = SparseVDClassifier("lenet300_100", num_train=N_TRAIN)
    trainer.fit(module, dm)
    assert bar.train_progress_bar.desc.startswith("epoch 1 (2/2)")
    shown = bar.get_metrics(trainer, module)
    assert "v_num" not in shown and {"kept", "val_acc", "traffic", "run_eta"} <= set(shown), shown
    assert shown["traffic"] == f"{100 * strategy.ledger.total.wire_fraction:.1f}%"
    assert shown["run_eta"] == "0:00:00"  # every planned step is done


class _SaveAt(pl.Callback):
    """A checkpoint after ``step`` rounds, where Lightning's own step checkpoints are written."""

    def __init__(self, step: int, path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


class _BarSpy(pl.Callback):
    """What the bar shows after the first batch a (resumed) session trains, and where that is."""

    def __init__(self, bar: RunProgressBar) -> None:
        self.bar, self.seen = bar, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.seen is None:
            shown = self.bar.train_progress_bar
            self.seen = (trainer.current_epoch, batch_idx, shown.desc, shown.total, shown.n, shown.initial)


@pytest.mark.parametrize("stop", ["mid-epoch save", "max_steps"])
def test_a_resumed_run_shows_its_epoch_total_and_place_at_once(stop, data_dir, tmp_path):
    """Lightning calls no epoch start for an epoch it resumes (a checkpoint written mid-epoch, or at
    the end of a run stopped by max_steps): the bar must still say which epoch it is, of how many
    batches, and count from where the run stopped."""

    def fit(max_steps, max_epochs, callbacks, resume=None):
        pl.seed_everything(0, verbose=False)
        dm = FederatedDataModule("mnist", 4, batch_size=32, data_dir=data_dir, val_size=64)
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, strategy=FederatedStrategy(), max_steps=max_steps,
            max_epochs=max_epochs, limit_val_batches=0, callbacks=callbacks, enable_model_summary=False,
            logger=False, default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(SparseVDClassifier("lenet300_100", num_train=N_TRAIN), dm, ckpt_path=resume)
        return trainer

    if stop == "max_steps":
        first = fit(3, 2, [RunCheckpoint(tmp_path / "checkpoints")])
        checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    else:
        first = fit(-1, 1, [_SaveAt(3, tmp_path / "step3.ckpt")])
        checkpoint = tmp_path / "step3.ckpt"
    batches = first.num_training_batches
    assert batches > 3  # step 3 is mid-epoch
    bar = RunProgressBar()
    spy = _BarSpy(bar)
    fit(-1, 2, [bar, spy], resume=str(checkpoint))
    epoch, batch_idx, description, total, n, initial = spy.seen
    assert description.startswith(f"epoch {epoch} ({epoch + 1}/2)"), spy.seen
    assert (total, n, initial) == (batches, batch_idx + 1, batch_idx), spy.seen
    if stop == "mid-epoch save":
        assert (epoch, batch_idx) == (0, 3), spy.seen
