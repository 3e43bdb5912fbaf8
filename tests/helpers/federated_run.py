"""A small federated fit on the CPU; process 0 writes what the tests check.

Usage: python tests/helpers/federated_run.py DATA_DIR OUT_DIR --devices N --processes P [options]

``OUT_DIR/result.pt`` holds the final parameters (device 0's model), every device's state, the
ledger's per-step history and total, and, recomputed independently of the strategy from the raw
gradients of every device, the per-step upload count (non-zero entries of the raw gradient
where ``log_alpha < T`` at the start of the step, biases included) of every device.
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
from lightning_fed.communication import SparseCodec  # noqa: E402
from lightning_fed.nn import variational, variational_layers  # noqa: E402
from modules.classifier import SparseVDClassifier  # noqa: E402
from modules.networks import build_network  # noqa: E402


class RecordingCodec(SparseCodec):
    """The default codec, remembering the length and values of every payload it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[int, int, int]] = []  # bytes, values, non-zero entries in

    def encode(self, tensors, **kwargs):
        payload = super().encode(tensors, **kwargs)
        values = self.read(payload, [t.numel() for t in tensors])[1]
        self.written.append((len(payload), values, sum(int(t.count_nonzero()) for t in tensors)))
        return payload


class UploadRecorder(SparseVDClassifier):
    """The classifier, counting what each device should send, from its raw gradients."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.uploads: list[int] = []

    def on_fit_start(self) -> None:
        torch.set_num_threads(1)  # the same float reductions in every process layout

    def training_step(self, batch, batch_idx):
        keep = {
            f"{n}.weight": layer.log_alpha.detach() < self.threshold for n, layer in variational_layers(self)
        }
        loss = super().training_step(batch, batch_idx)
        names = [n for n, _ in self.named_parameters() if not n.endswith("log_sigma2")]
        grads = torch.autograd.grad(loss, [self.get_parameter(n) for n in names], retain_graph=True)
        self.uploads.append(
            sum(
                int((g * keep[n] if n in keep else g).count_nonzero())
                for n, g in zip(names, grads, strict=True)
            )
        )
        return loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--network", default="lenet300_100")
    parser.add_argument("--transport", default="dense")
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--share-log-sigma2", action="store_true")
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--devices-per-round", type=int, default=None)
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--aggregator", default=None)
    parser.add_argument("--attack", default=None)
    parser.add_argument("--malicious-fraction", type=float, default=0.0)
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)
    dm = FederatedDataModule("mnist", args.devices, batch_size=32, data_dir=args.data_dir, val_size=64)
    network = build_network(args.network, 1, 28, 10)
    if not args.dense:
        network = variational(network, init_log_sigma2=-6.0)
    model = UploadRecorder(
        network, num_train=576, dense=args.dense, lr=args.lr, mask_log_sigma2=args.share_log_sigma2
    )
    checkpoints = ModelCheckpoint(dirpath=out / "ckpt", save_last=True, save_top_k=0)
    codec = RecordingCodec()
    strategy = FederatedStrategy(
        transport=args.transport, share_log_sigma2=args.share_log_sigma2, codec=codec,
        devices_per_round=args.devices_per_round, local_steps=args.local_steps,
        failure_rate=args.failure_rate, aggregator=args.aggregator, attack=args.attack,
        malicious_fraction=args.malicious_fraction,
    )  # fmt: skip
    trainer = pl.Trainer(
        accelerator="cpu", devices=args.processes, num_nodes=args.num_nodes, strategy=strategy,
        max_epochs=args.max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[checkpoints], default_root_dir=out,
    )  # fmt: skip
    trainer.fit(model, dm, ckpt_path=args.resume)
    hosted = strategy.hosted_devices
    per_step = len(hosted) + 1  # each hosted device's upload, then the server's download
    mine = {
        "uploads": {d: model.uploads[i :: len(hosted)] for i, d in enumerate(hosted)},
        "payloads": {d: codec.written[i::per_step] for i, d in enumerate(hosted)},
        "downloads": codec.written[len(hosted) :: per_step],
        "devices": strategy.devices.state_dict(),
    }
    parts = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, mine)
    if trainer.is_global_zero:
        torch.save(
            {
                "state": {k: v.clone() for k, v in model.state_dict().items()},
                "devices": {d: s for part in parts for d, s in part["devices"].items()},
                "history": [vars(t) for t in strategy.ledger.history],
                "total": vars(strategy.ledger.total),
                "uploads": {d: u for part in parts for d, u in part["uploads"].items()},
                "payloads": {d: u for part in parts for d, u in part["payloads"].items()},
                "downloads": parts[0]["downloads"],
                "val_acc": float(trainer.callback_metrics["val/acc"]),
                "train_nll": float(trainer.callback_metrics["train/nll"]),  # the last round's mean
            },
            out / "result.pt",
        )


if __name__ == "__main__":
    main()
