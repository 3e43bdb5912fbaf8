"""Lightning's own command line for lightning-fed: ``LightningCLI`` over the model, data and strategy.

Usage:
    python scripts/cli.py fit --config configs/cli/fmnist_16.yaml --trainer.default_root_dir ~/lf-runs/cli
    python scripts/cli.py fit --config configs/cli/fmnist_16.yaml --trainer.strategy.codec qsgd:8 \\
        --trainer.default_root_dir ~/lf-runs/cli-q8
    python scripts/cli.py fit --data.dataset mnist-5k --data.num_devices 4 --model.network lenet300_100 \\
        --trainer.max_epochs 1 --print_config     # the whole configuration of a run, as YAML
    python scripts/cli.py fit --help              # every option of every class

Every option of :class:`~modules.classifier.SparseVDClassifier` (``--model.*``),
:class:`~datamodules.FederatedDataModule` (``--data.*``), Lightning's ``Trainer`` (``--trainer.*``)
and, through it, :class:`~lightning_fed.FederatedStrategy` (``--trainer.strategy.*``, the default
strategy) and any callback by class path (``--trainer.callbacks+=callbacks.KLWarmup``), from YAML
and from the command line alike, as users of ``LightningCLI`` expect. The model's data-dependent
arguments (training-set size, classes, channels, image size) follow from the datamodule. A bad
option is one line, exit code 2. ``scripts/fit.py`` remains the paper's front end (the summary,
the ledger, W&B, plots, run folders); this one is for composing the library's classes.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI  # noqa: E402

from datamodules import FederatedDataModule  # noqa: E402
from lightning_fed.runs.screen import drop_lightning_noise  # noqa: E402
from modules.classifier import SparseVDClassifier  # noqa: E402

STRATEGY = "lightning_fed.strategy.FederatedStrategy"


class OneLineArgumentParser(LightningArgumentParser):
    """Bad input: ``cli.py: error: MESSAGE`` on one line (the message's first), exit code 2."""

    def error(self, message: str, *args, **kwargs):
        first = str(message).strip().splitlines()[0] if str(message).strip() else "bad arguments"
        sys.stderr.write(f"cli.py: error: {first}\n")
        raise SystemExit(2)


def reason_of(message: str) -> str:
    """The constructor's own words in jsonargparse's report of a value no type accepted."""
    reasons = [
        line.strip()[2:]
        for line in message.splitlines()
        if line.strip().startswith("- ") and not line.strip().startswith("- Expected a")
    ]
    return reasons[0] if reasons else message.strip().splitlines()[0]


def train_size(datamodule: FederatedDataModule) -> int:
    """The federated training set's size (loads and partitions the data once)."""
    datamodule.setup("fit")
    return datamodule.num_train


class FederatedCLI(LightningCLI):
    """``LightningCLI`` with the model's data-dependent arguments linked to the datamodule."""

    def instantiate_classes(self) -> None:
        """A constructor's refusal (a bad codec, a negative learning rate) is a one-line error too."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            self.parser.error(reason_of(str(error)))

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults({"data.num_devices": 16, "trainer.use_distributed_sampler": False})
        parser.link_arguments("data", "model.num_train", compute_fn=train_size, apply_on="instantiate")
        for source, target in (
            ("num_classes", "num_classes"),
            ("channels", "in_channels"),
            ("size", "image_size"),
        ):
            parser.link_arguments(
                "data",
                f"model.{target}",
                compute_fn=lambda dm, key=source: getattr(dm.info, key),
                apply_on="instantiate",
            )


def main(args=None) -> FederatedCLI:
    drop_lightning_noise()  # the warnings fit.py drops (lightning_fed.runs.screen)
    return FederatedCLI(
        SparseVDClassifier,
        FederatedDataModule,
        trainer_defaults={"strategy": {"class_path": STRATEGY}},
        parser_class=OneLineArgumentParser,
        args=args,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
