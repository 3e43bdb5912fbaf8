"""What the strategy cannot honour of Lightning's plugins is refused in one line, before a round:
a loss scaler (16-mixed on a GPU: the devices' steps would not be unscaled, the server's would be
divided by the scale) and gradient clipping (it would clip the server's step only)."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn

from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from modules.classifier import SparseVDClassifier
from tests.conftest import N_TRAIN


def _fit(data_dir, **trainer_options):
    dm = FederatedDataModule("mnist", 2, batch_size=16, data_dir=data_dir, val_size=64)
    module = SparseVDClassifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), num_train=N_TRAIN)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=FederatedStrategy(), max_steps=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        limit_val_batches=0, **trainer_options,
    )  # fmt: skip
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, dm)
    return not all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_a_precision_that_scales_the_loss_is_refused(data_dir):
    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match=r"^precision='16-mixed' scales the loss, and the devices' steps"):
        _fit(data_dir, plugins=[scaled])


def test_gradient_clipping_is_refused(data_dir):
    with pytest.raises(ValueError, match=r"^gradient_clip_val=1.0 would clip the server's step only"):
        _fit(data_dir, gradient_clip_val=1.0)


def test_bf16_mixed_has_no_scaler_and_trains(data_dir):
    assert _fit(data_dir, precision="bf16-mixed")  # the round ran: the parameters moved
