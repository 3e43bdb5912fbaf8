"""Per-epoch table of a run (finished or still running): kept weights, validation accuracy, and the
traffic of each epoch and in total, in dense epochs, read from the run's CSV logs.

Usage:
    python scripts/epoch_table.py ~/lf-runs/reproduce/fmnist_16_beta/sparse
    python scripts/epoch_table.py RUN --epochs 0,1,2,4,9 --spans 0-20,21-40,41-
    python scripts/epoch_table.py RUN --dense-dir results/logs/h200-2026-11-26/fmnist_16_tuned/dense

``--epochs`` keeps only those rows (the totals still count every epoch before them); ``--spans``
adds the dense epochs sent within each span (``A-B`` both included, ``A-`` to the end).
``--dense-dir`` counts traffic against a dense baseline's run folder (its ``summary.json``): each
epoch in percent of the baseline's epoch, the totals in percent of the whole baseline, which is
what a run whose epoch has fewer rounds than the baseline's steps (FedAvg rounds of several local
steps) needs. The tables and span figures in RESULTS.md are printed by the command written next
to them.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lightning_fed.runs.cli import OneLineParser  # noqa: E402
from lightning_fed.runs.epoch_log import (  # noqa: E402
    MEASURES,
    against_baseline,
    epoch_rows,
    markdown_table,
    number,
    read_epochs,
    span_totals,
)
from lightning_fed.runs.summary import read_summary  # noqa: E402

_SPAN = re.compile(r"(\d+)-(\d*)")


def parse_epochs(text: str) -> list[int]:
    """``"0,1,4"`` as epoch numbers.

    Example::

        >>> parse_epochs("0, 1,4")
        [0, 1, 4]
    """
    try:
        epochs = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--epochs {text!r}: give epoch numbers >= 0 as 0,1,4") from None
    if any(e < 0 for e in epochs):
        raise argparse.ArgumentTypeError(f"--epochs {text!r}: give epoch numbers >= 0 as 0,1,4")
    return epochs


def parse_spans(text: str) -> list[tuple[int, int | None]]:
    """``"0-20,21-"`` as (first, last) pairs, last None for "to the end".

    Example::

        >>> parse_spans("0-20,21-")
        [(0, 20), (21, None)]
    """
    spans = []
    for part in text.split(","):
        match = _SPAN.fullmatch(part.strip())
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise argparse.ArgumentTypeError(
                f"--spans {text!r}: give spans as FIRST-LAST or FIRST-, e.g. 0-20,21-"
            )
        spans.append((int(match.group(1)), int(match.group(2)) if match.group(2) else None))
    return spans


def span_label(rows: list[dict], first: int, last: int | None) -> str:
    """``FIRST-LAST``; an open span ends at the last logged epoch, or stays ``FIRST-`` before it.

    Example::

        >>> rows = [{"epoch": 0}, {"epoch": 1}]
        >>> span_label(rows, 0, None), span_label(rows, 5, None), span_label(rows, 1, 3)
        ('0-1', '5-', '1-3')
    """
    if last is not None:
        return f"{first}-{last}"
    logged = rows[-1]["epoch"] if rows else -1
    return f"{first}-{logged}" if logged >= first else f"{first}-"


def spans_table(rows: list[dict], spans: list[tuple[int, int | None]]) -> str:
    """The dense epochs sent within each span, by each measure."""
    lines = [
        "| epochs | sent, paper's measure | sent, wire bytes | sent, Golomb-coded |",
        "|---|---|---|---|",
    ]
    for first, last in spans:
        totals = span_totals(rows, first, last)
        lines.append(
            f"| {span_label(rows, first, last)} | "
            + " | ".join(number(totals[m], 2) for m in MEASURES)
            + " |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", help="a fit.py run folder (the one holding csv/)")
    p.add_argument("--epochs", type=parse_epochs, help="only these rows, e.g. 0,1,2,4,9")
    p.add_argument("--spans", type=parse_spans, help="traffic within spans, e.g. 0-20,21-40,41-")
    p.add_argument("--dense-dir", help="a dense baseline's run folder: traffic in percent of it")
    return p.parse_args(argv)


def dense_baseline(run_dir) -> tuple[float, int]:
    """The bytes dense distributed SGD sent in a baseline run, and its epochs (its summary.json)."""
    try:
        summary = read_summary(run_dir, needs=("comm_dense_bytes", "epochs"))
    except ValueError as error:
        raise SystemExit(
            f"epoch_table.py: error: --dense-dir {str(run_dir)!r}: {error}; give a finished fit.py run folder"
        ) from None
    return float(summary["comm_dense_bytes"]), int(summary["epochs"])


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        rows = epoch_rows(read_epochs(args.run))
    except FileNotFoundError as error:
        raise SystemExit(f"epoch_table.py: error: {error}") from None
    if args.dense_dir:
        rows = against_baseline(rows, *dense_baseline(args.dense_dir))
    shown = rows if args.epochs is None else [r for r in rows if r["epoch"] in set(args.epochs)]
    missing = sorted(set(args.epochs or ()) - {r["epoch"] for r in rows})
    print(markdown_table(shown, baseline=bool(args.dense_dir)))
    if missing:
        print(f"\n(not logged yet: epochs {', '.join(map(str, missing))})")
    if args.spans:
        print("\n" + spans_table(rows, args.spans))


if __name__ == "__main__":
    main()
