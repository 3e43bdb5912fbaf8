"""Test accuracy of a checkpoint's model with ``M(alpha)`` at other thresholds: what the mask costs.

Usage:
    python scripts/threshold_sweep.py ~/lf-runs/shakespeare/NAME/checkpoints/last.ckpt \\
        --dataset shakespeare --devices 715 [--thresholds 3,4,6,none] [--device R]

Prints one row per threshold ``T`` of ``M(alpha) = [log_alpha < T]``: the weights kept and the test
top-1 of the model evaluated with them (``none``: theta itself, every weight kept). The data set and
its options must be the run's (the test part of a naturally partitioned set is that of its devices).
The checkpointed model holds device 0's log_sigma2 under the paper's variant; ``--device R`` reads
device R's (:mod:`lightning_fed.nn.thresholds`).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from datamodules import FederatedDataModule  # noqa: E402
from datamodules.catalog import INFO  # noqa: E402
from lightning_fed.federation.checkpoint import network_state_of_device  # noqa: E402
from lightning_fed.nn.init_from import read_checkpoint  # noqa: E402
from lightning_fed.nn.layers import check_threshold  # noqa: E402
from lightning_fed.nn.thresholds import accuracy_at_thresholds  # noqa: E402
from lightning_fed.runs.cli import HelpFormatter, OneLineParser, int_at_least  # noqa: E402


def thresholds_of(text: str) -> list[float | None]:
    """``"3,4,none"`` -> ``[3.0, 4.0, None]``; a one-line error naming the bad entry."""
    values = []
    for entry in (e.strip() for e in text.split(",")):
        if entry.lower() == "none":
            values.append(None)
            continue
        try:
            values.append(check_threshold(float(entry)))
        except ValueError:
            raise ValueError(f"--thresholds: {entry!r} is not allowed (a finite number or none)") from None
    return values


def markdown(rows) -> str:
    """The sweep's rows as a table."""
    lines = ["| threshold | kept | test top-1 |", "|---|---|---|"]
    for threshold, kept, total, accuracy in rows:
        shown = "none (theta)" if threshold is None else f"{threshold:g}"
        lines.append(
            f"| {shown} | {kept:,} of {total:,} ({100 * kept / total:.2f} %) | {100 * accuracy:.2f} % |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = OneLineParser(prog="threshold_sweep.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "checkpoint", help="a fit.py checkpoint of a variational model (RUN/checkpoints/last.ckpt)"
    )
    p.add_argument("--dataset", default="fashion-mnist", choices=list(INFO), help="the run's data set")
    p.add_argument("--devices", type=int_at_least(1), default=None, help="the run's N (natural partitions)")
    p.add_argument("--data-dir", default=None, help="where the data set is (fit.py's --data-dir)")
    p.add_argument("--window", type=int_at_least(1), default=None, help="shakespeare: the run's --window")
    p.add_argument("--stride", type=int_at_least(1), default=None, help="shakespeare: the run's --stride")
    p.add_argument("--thresholds", default="3,4,6,none", help="T values by commas; none: no mask")
    p.add_argument("--device", type=int, default=None, help="read this device's own log_sigma2")
    args = p.parse_args(argv)
    try:
        args.thresholds = thresholds_of(args.thresholds)
    except ValueError as error:
        p.error(str(error))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from modules.classifier import SparseVDClassifier

    try:
        checkpoint = read_checkpoint(args.checkpoint)
        hparams = checkpoint.get("hyper_parameters", {})
        if hparams.get("dense", False):
            raise ValueError(f"{args.checkpoint} holds a dense model (--dense): it has no mask to sweep")
        try:
            state = network_state_of_device(checkpoint, args.device, args.checkpoint)
        except ValueError as error:
            raise ValueError(f"--{error}") from None  # it names the argument: device N
        model = SparseVDClassifier(**{k: v for k, v in hparams.items() if k != "pretrained"})
        model.network.load_state_dict(state)
        dm = FederatedDataModule(
            args.dataset, args.devices, batch_size=512, data_dir=args.data_dir, window=args.window,
            stride=args.stride,
        )  # fmt: skip
        dm.setup("test")
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"threshold_sweep.py: error: {error}") from None
    print(markdown(accuracy_at_thresholds(model.network, dm.test_dataloader(), args.thresholds)))


if __name__ == "__main__":
    main()
