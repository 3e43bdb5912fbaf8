"""A small federated fit in this process: 4 devices of the fake MNIST, checkpointing, resumable."""

import pytorch_lightning as pl
import torch

from callbacks import RunCheckpoint
from datamodules import FederatedDataModule
from modules.classifier import SparseVDClassifier
from tests.conftest import N_TRAIN


def small_fit(data_dir, root, make_network, strategy, max_steps: int, resume=None, every=None, seed=3):
    """Fit ``make_network()`` (built after seeding) under ``strategy`` for ``max_steps`` rounds; the
    run checkpoints ``root/checkpoints/last.ckpt`` every ``every`` steps and resumes from ``resume``."""
    pl.seed_everything(seed, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=16, data_dir=data_dir, val_size=64)
    torch.manual_seed(0)
    module = SparseVDClassifier(make_network(), num_train=N_TRAIN, lr=1e-2)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=root,
        callbacks=[RunCheckpoint(root / "checkpoints", every_n_steps=every)],
    )  # fmt: skip
    trainer.fit(module, dm, ckpt_path=resume)
    return module, strategy
