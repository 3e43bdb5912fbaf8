"""The progress bar of a run: epoch E of M, kept weights, validation accuracy, traffic, ETA."""

import pytorch_lightning as pl

from callbacks import RunProgressBar
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
