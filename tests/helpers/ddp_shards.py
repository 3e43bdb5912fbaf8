"""Run a 2-process CPU DDP fit with FederatedDataModule; each rank writes the indices it trained on.

Usage: python tests/helpers/ddp_shards.py DATA_DIR NUM_PROCESSES
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from datamodules import FederatedDataModule  # noqa: E402


class Recorder(pl.LightningModule):
    def __init__(self, out: Path) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(784, 10)
        self.out, self.seen = out, []

    def training_step(self, batch, batch_idx):
        x, y = batch
        pixels = ((x * 0.3081 + 0.1307) * 255).round().long()
        self.seen += (pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 0, 1]).tolist()
        return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def on_train_end(self) -> None:
        (self.out / f"rank{self.global_rank}.txt").write_text(" ".join(map(str, self.seen)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    data_dir, processes = Path(sys.argv[1]), int(sys.argv[2])
    datamodule = FederatedDataModule("mnist", batch_size=50, data_dir=data_dir, val_size=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=processes,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Recorder(data_dir), datamodule)
