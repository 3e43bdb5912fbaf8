"""lightning_fed.runs.resume and wandb_run: a run's start, its continuation, its W&B logger, from Python."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from lightning_fed.runs.resume import check_fresh_folder, last_checkpoint, resume_checkpoint
from lightning_fed.runs.wandb_run import finish_wandb, wandb_logger


class Linear(pl.LightningModule):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(width, 2)


def _save(path, model, num_devices=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": model.state_dict()}
    if num_devices is not None:
        checkpoint["federated"] = {"num_devices": num_devices}
    torch.save(checkpoint, path)


def test_a_fresh_run_needs_a_folder_without_a_run(tmp_path):
    assert resume_checkpoint(tmp_path, None, Linear(), 4, "linear") is None
    _save(last_checkpoint(tmp_path), Linear())
    with pytest.raises(ValueError, match=r"holds a run \(checkpoints/last.ckpt\); pass resume='last'"):
        check_fresh_folder(tmp_path)


def test_resume_last_is_the_folder_s_own_checkpoint_when_it_fits(tmp_path):
    _save(last_checkpoint(tmp_path), Linear(), num_devices=4)
    assert resume_checkpoint(tmp_path, "last", Linear(), 4, "linear") == str(last_checkpoint(tmp_path))


@pytest.mark.parametrize(
    ("saved", "saved_devices", "message"),
    [
        (Linear(width=5), 4, r"is a checkpoint of another architecture than network='linear'"),
        (Linear(), 8, r"is a run of 8 devices; resume it with num_devices=8"),
    ],
)
def test_a_checkpoint_that_cannot_continue_the_run_is_named(tmp_path, saved, saved_devices, message):
    path = tmp_path / "other.ckpt"
    _save(path, saved, num_devices=saved_devices)
    with pytest.raises(ValueError, match=message):
        resume_checkpoint(tmp_path, str(path), Linear(), 4, "linear")


def test_offline_logger_saves_in_the_run_folder_and_finish_leaves_other_loggers_alone(tmp_path):
    logger = wandb_logger(tmp_path, project="lf-test", mode="offline", config={"devices": 4})
    assert isinstance(logger, WandbLogger) and logger.save_dir == str(tmp_path)
    trainer = pl.Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", enable_progress_bar=False)
    assert finish_wandb(trainer, {"test_acc": 0.5}, []) == []  # no W&B logger: nothing to do or say
    assert not (tmp_path / "wandb").exists()
