"""Runs side by side: validation accuracy against rounds and against cumulative wire bytes, one plot each.

Usage: python scripts/plot_comparison.py --run LABEL=RUN_DIR [--run LABEL=RUN_DIR ...] --out FOLDER

Each RUN_DIR is a fit.py run folder (its ``ledger.json`` and ``csv/`` logs, every session of a
resumed run); the plots go to ``FOLDER/accuracy_against_rounds.png`` and
``FOLDER/accuracy_against_bytes.png``. Example:

    python scripts/plot_comparison.py --run "dense FedAvg=~/lf-runs/k1000/dense" \\
        --run "Algorithm 1=~/lf-runs/k1000/alg1" --out results/plots/k1000
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_fed.runs.cli import OneLineParser  # noqa: E402
from lightning_fed.runs.epoch_log import read_epochs  # noqa: E402
from lightning_fed.runs.plots import plot_accuracy_against_bytes, plot_accuracy_against_rounds  # noqa: E402


def labelled_run(text: str) -> tuple[str, Path]:
    """``LABEL=RUN_DIR`` as a label and a folder that holds a fit.py run."""
    label, sep, folder = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL=RUN_DIR")
    path = Path(folder).expanduser()
    if not (path / "ledger.json").is_file():
        raise argparse.ArgumentTypeError(
            f"{text!r}: {folder} has no ledger.json (is it a fit.py run folder?)"
        )
    return label, path


def main(argv=None) -> None:
    parser = OneLineParser(
        prog="plot_comparison.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--run", type=labelled_run, action="append", required=True, metavar="LABEL=RUN_DIR")
    parser.add_argument("--out", required=True, type=Path, help="the folder the two plots are written to")
    args = parser.parse_args(argv)
    runs = {
        label: (json.loads((path / "ledger.json").read_text()), read_epochs(path)) for label, path in args.run
    }
    for path in (
        plot_accuracy_against_rounds(runs, args.out / "accuracy_against_rounds.png"),
        plot_accuracy_against_bytes(runs, args.out / "accuracy_against_bytes.png"),
    ):
        print(path)


if __name__ == "__main__":
    main()
