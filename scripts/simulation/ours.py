"""lightning-fed's engine on the benchmark's clients: ``FederatedStrategy`` rounds, plain layers.

The same FedAvg as ``plain.py`` (K sampled, one local epoch of SGD, server average), with
everything the framework does per round: the model encoded and counted to each sampled device,
each update encoded, counted and decoded, device state swapped in and out. ``--processes P``
hosts the clients in P processes on the CPU (Lightning's launcher starts the others), each
training the round's sampled clients it hosts.
"""

import sys

import pytorch_lightning as pl
import torch
from common import ROOT, RoundClock, arguments

sys.path.insert(0, str(ROOT))
from datamodules import FederatedDataModule  # noqa: E402
from lightning_fed import FederatedStrategy  # noqa: E402
from modules.classifier import SparseVDClassifier  # noqa: E402


class RoundTimer(pl.Callback):
    def __init__(self, clock: RoundClock) -> None:
        self.clock = clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.stop()


def main() -> None:
    args = arguments(device=True)
    meta = torch.load(args.data, weights_only=True)
    pl.seed_everything(args.seed, verbose=False)
    dm = FederatedDataModule(
        "fashion-mnist", int(meta["num_clients"]), batch_size=args.batch_size, seed=int(meta["seed"]),
        val_size=int(meta["val_size"]),
    )  # fmt: skip
    dm.setup("fit")
    model = SparseVDClassifier("cifarnet", num_train=dm.num_train, dense=True)
    strategy = FederatedStrategy(
        devices_per_round=args.per_round, local_epochs=1, client_optimizer="sgd", client_lr=args.lr
    )
    clock = RoundClock()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    trainer = pl.Trainer(
        accelerator="gpu" if gpu else "cpu", devices=[device.index or 0] if gpu else args.processes,
        strategy=strategy,
        max_steps=args.rounds, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=[RoundTimer(clock)],
    )  # fmt: skip
    trainer.fit(model, dm)
    if trainer.global_rank == 0:  # every process steps the same rounds in lock-step; one reports them
        total = strategy.ledger.total
        clock.report(wire_bytes=total.wire_bytes, dense_bytes=total.dense_bytes)


if __name__ == "__main__":
    main()
