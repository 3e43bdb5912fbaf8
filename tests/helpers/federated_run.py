"""A small federated fit on the CPU; every rank writes what the tests check.

Usage: python tests/helpers/federated_run.py DATA_DIR OUT_DIR DEVICES [options]

Each rank writes ``OUT_DIR/rank{r}.pt``: its final parameters, the ledger's per-step history,
and, recomputed independently of the strategy, the per-step upload count of this rank (non-zero
entries of its raw local gradient where ``log_alpha < T`` at the start of the step, plus biases)
and the per-step non-zero count of the averaged gradient.
"""

import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from datamodules import FederatedDataModule  # noqa: E402
from lightning_fed import FederatedStrategy  # noqa: E402
from lightning_fed.nn import variational, variational_layers  # noqa: E402
from modules.classifier import SparseVDClassifier  # noqa: E402
from modules.networks import build_network  # noqa: E402


class Recorder(pl.Callback):
    """Counts, independently of the hook and the ledger, what each step should send."""

    def __init__(self, network: torch.nn.Module, threshold: float) -> None:
        self.network, self.threshold = network, threshold
        self.raw: dict[str, torch.Tensor] = {}
        self.uploads, self.downloads, self.keep = [], [], {}
        for name, param in network.named_parameters():
            if not name.endswith("log_sigma2"):
                param.register_hook(self._raw_hook(name))  # registered before the module's mask hook

    def _raw_hook(self, name):
        def hook(grad):
            self.raw[name] = grad.detach().clone()

        return hook

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keep = {
            f"{n}.weight": layer.log_alpha.detach() < self.threshold
            for n, layer in variational_layers(self.network)
        }

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        upload = 0
        for name, grad in self.raw.items():
            kept = grad * self.keep[name] if name in self.keep else grad
            upload += int(kept.count_nonzero())
        self.uploads.append(upload)
        self.downloads.append(
            sum(int(p.grad.count_nonzero()) for n, p in self.network.named_parameters() if n in self.raw)
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("out_dir")
    parser.add_argument("devices", type=int)
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--transport", default="dense")
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--share-log-sigma2", action="store_true")
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)
    world = args.devices * args.num_nodes
    dm = FederatedDataModule("mnist", world, batch_size=32, data_dir=args.data_dir, val_size=0)
    network = build_network("lenet300_100", 1, 28, 10)
    if not args.dense:
        network = variational(network, init_log_sigma2=-6.0)
    recorder = Recorder(network, 3.0)
    model = SparseVDClassifier(
        network, num_train=640, dense=args.dense, lr=args.lr, mask_log_sigma2=args.share_log_sigma2
    )
    checkpoints = ModelCheckpoint(dirpath=out / "ckpt", save_last=True, save_top_k=0)
    strategy = FederatedStrategy(transport=args.transport, share_log_sigma2=args.share_log_sigma2)
    trainer = pl.Trainer(
        accelerator="cpu", devices=args.devices, num_nodes=args.num_nodes, strategy=strategy,
        max_epochs=args.max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, callbacks=[recorder, checkpoints],
        default_root_dir=out,
    )  # fmt: skip
    trainer.fit(model, dm, ckpt_path=args.resume)
    torch.save(
        {
            "state": {k: v.clone() for k, v in model.state_dict().items()},
            "history": [vars(t) for t in strategy.ledger.history],
            "total": vars(strategy.ledger.total),
            "uploads": recorder.uploads,
            "downloads": recorder.downloads,
        },
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main()
