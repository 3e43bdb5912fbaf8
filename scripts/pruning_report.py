"""What pruned the weights of a checkpoint: learned noise (log_sigma2) or a shrinking theta.

Usage:
    python scripts/pruning_report.py ~/lf-runs/reproduce/fmnist_16_beta003/sparse/checkpoints/last.ckpt
    python scripts/pruning_report.py CKPT --device 3     # device 3's own log_sigma2 (the paper's variant)

Prints, per variational layer, the weights kept, log_sigma2's 1 / 50 / 99 % quantiles, and how many
of the pruned weights theta alone prunes (``log_alpha`` over the threshold with log_sigma2 put back
to its initial value). The threshold and the initial log_sigma2 are the run's own (the checkpoint's
hyper-parameters). The checkpointed model holds device 0's log_sigma2; ``--device R`` reads device
R's from the checkpoint's per-device state.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lightning_fed.federation.checkpoint import network_state_of_device  # noqa: E402
from lightning_fed.nn.init_from import read_checkpoint  # noqa: E402
from lightning_fed.nn.layers import DEFAULT_INIT_LOG_SIGMA2, DEFAULT_THRESHOLD  # noqa: E402
from lightning_fed.nn.pruning import LayerPruning, pruning_report  # noqa: E402
from lightning_fed.runs.cli import OneLineParser  # noqa: E402


def markdown(report: dict[str, LayerPruning]) -> str:
    """The report as a table, with the whole model's line last."""
    lines = [
        "| layer | weights | kept | log_sigma2 1 % / 50 % / 99 % | pruned by theta alone |",
        "|---|---|---|---|---|",
    ]
    for name, layer in report.items():
        quantiles = " / ".join(f"{q:.2f}" for q in layer.log_sigma2_quantiles)
        lines.append(
            f"| {name} | {layer.total:,} | {_share(layer.kept, layer.total)} | {quantiles} "
            f"| {_share(layer.pruned_by_theta, layer.pruned)} of the pruned |"
        )
    total = sum(r.total for r in report.values())
    kept = sum(r.kept for r in report.values())
    by_theta = sum(r.pruned_by_theta for r in report.values())
    lines.append(
        f"| all | {total:,} | {_share(kept, total)} | | {_share(by_theta, total - kept)} of the pruned |"
    )
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", help="a fit.py checkpoint (RUN/checkpoints/last.ckpt)")
    p.add_argument("--device", type=int, help="read this device's own log_sigma2 (default: device 0's)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        checkpoint = read_checkpoint(args.checkpoint)
        hparams = checkpoint.get("hyper_parameters", {})
        try:
            state = network_state_of_device(checkpoint, args.device, args.checkpoint)
        except ValueError as error:
            raise ValueError(f"--{error}") from None  # it names the argument: device N
        threshold = hparams.get("threshold", DEFAULT_THRESHOLD)
        report = pruning_report(state, threshold, hparams.get("init_log_sigma2", DEFAULT_INIT_LOG_SIGMA2))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"pruning_report.py: error: {error}") from None
    print(markdown(report))


if __name__ == "__main__":
    main()
