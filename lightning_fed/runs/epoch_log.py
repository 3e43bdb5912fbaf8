"""A run's per-epoch record read back from its CSV logs: the figures behind RESULTS.md's tables.

``fit.py`` logs through Lightning's ``CSVLogger`` into ``RUN/csv/version_N/metrics.csv``, one
version per call (a resumed run has several). Every epoch-level metric is there, during the run
as well as after it, so a run still in progress can be read the same way as a finished one.
Traffic is counted in *dense epochs*: the ``comm/epoch/*_fraction`` of an epoch is what it sent
over what dense distributed SGD sends in one epoch, so their sum over epochs is the run's traffic
in dense epochs (divide by a dense baseline's epoch count for the fraction of its traffic).
A run whose epoch is not a dense baseline's epoch (FedAvg rounds of several local steps: an epoch
of 4 rounds where dense SGD takes 27 steps) is counted against the baseline's own bytes instead,
by :func:`against_baseline`.
"""

import csv
import re
from pathlib import Path

MEASURES = ("paper", "wire", "golomb")
COLUMNS = {
    "kept": "sparsity/total",
    "val_acc": "val/acc",
    **{measure: f"comm/epoch/{measure}_fraction" for measure in MEASURES},
}
BYTES = {measure: f"comm/epoch/{measure}_bytes" for measure in MEASURES}
_VERSION = re.compile(r"version_(\d+)")


def csv_versions(run_dir) -> list[Path]:
    """The run's ``metrics.csv`` files, oldest version first (``version_10`` after ``version_9``).

    Example::

        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> for n in (10, 9):
        ...     (run / "csv" / f"version_{n}").mkdir(parents=True)
        ...     _ = (run / "csv" / f"version_{n}" / "metrics.csv").write_text("epoch\\n")
        >>> [path.parent.name for path in csv_versions(run)]
        ['version_9', 'version_10']
    """
    paths = Path(run_dir).expanduser().glob("csv/version_*/metrics.csv")
    return sorted(paths, key=lambda path: int(_VERSION.fullmatch(path.parent.name).group(1)))


def read_epochs(run_dir) -> dict[int, dict[str, float]]:
    """Every epoch's logged values by metric name; where versions overlap, the later one wins.

    Rows without an epoch and empty cells are skipped, so step rows add nothing but their own
    epoch-level values (Lightning logs ``on_epoch`` metrics in rows of their own).

    Raises:
        FileNotFoundError: the folder has no ``csv/version_*/metrics.csv``.
    """
    paths = csv_versions(run_dir)
    if not paths:
        raise FileNotFoundError(
            f"{str(run_dir)!r} has no csv/version_*/metrics.csv (is it a fit.py run folder?)"
        )
    epochs: dict[int, dict[str, float]] = {}
    for path in paths:
        with open(path, newline="") as file:
            for row in csv.DictReader(file):
                if not row.get("epoch"):
                    continue
                values = {k: float(v) for k, v in row.items() if k not in ("epoch", "step") and v}
                epochs.setdefault(int(float(row["epoch"])), {}).update(values)
    return dict(sorted(epochs.items()))


def epoch_rows(epochs: dict[int, dict[str, float]]) -> list[dict]:
    """One row a training epoch: the ``COLUMNS`` (None where not logged; epochs with none of them,
    such as the test's row after the last epoch, are left out) and, for each traffic measure,
    ``total_<measure>``: the dense epochs sent up to and including this one (None until the
    measure is first logged: a run counted before the ledger had it has no Golomb total).

    Example::

        >>> epochs = {0: {"comm/epoch/paper_fraction": 0.5, "val/acc": 0.8},
        ...           1: {"comm/epoch/paper_fraction": 0.25}}
        >>> [(r["epoch"], r["paper"], r["val_acc"], r["total_paper"]) for r in epoch_rows(epochs)]
        [(0, 0.5, 0.8, 0.5), (1, 0.25, None, 0.75)]
    """
    rows = []
    for epoch, values in sorted(epochs.items()):
        if not any(metric in values for metric in (*COLUMNS.values(), *BYTES.values())):
            continue
        row = {"epoch": epoch, **{column: values.get(metric) for column, metric in COLUMNS.items()}}
        row.update({f"{measure}_bytes": values.get(metric) for measure, metric in BYTES.items()})
        rows.append(row)
    return _with_totals(rows)


def _with_totals(rows: list[dict], per_epoch: float = 1.0) -> list[dict]:
    """Each row's ``total_<measure>``: the running sum of the measure over ``per_epoch`` (None until
    the measure is first logged)."""
    totals: dict[str, float | None] = dict.fromkeys(MEASURES)
    for row in rows:
        for measure in MEASURES:
            if row[measure] is not None:
                totals[measure] = (totals[measure] or 0.0) + row[measure] / per_epoch
            row[f"total_{measure}"] = totals[measure]
    return rows


def against_baseline(rows: list[dict], dense_bytes: float, dense_epochs: int) -> list[dict]:
    """The rows with traffic counted against a dense baseline that sent ``dense_bytes`` in
    ``dense_epochs`` epochs: each epoch's bytes as a fraction of the baseline's epoch
    (``dense_bytes / dense_epochs``), and the totals as fractions of the whole baseline.

    Example::

        >>> rows = epoch_rows({0: {"comm/epoch/wire_bytes": 30.0}, 1: {"comm/epoch/wire_bytes": 10.0}})
        >>> [(r["wire"], r["total_wire"]) for r in against_baseline(rows, dense_bytes=400, dense_epochs=4)]
        [(0.3, 0.075), (0.1, 0.1)]
    """
    if dense_bytes <= 0 or dense_epochs < 1:
        raise ValueError(
            f"a dense baseline needs bytes > 0 and epochs >= 1, got {dense_bytes} and {dense_epochs}"
        )
    epoch_bytes = dense_bytes / dense_epochs
    out = []
    for row in rows:
        sent = {m: row[f"{m}_bytes"] for m in MEASURES}
        out.append({**row, **{m: None if b is None else b / epoch_bytes for m, b in sent.items()}})
    return _with_totals(out, per_epoch=dense_epochs)


def span_totals(rows: list[dict], first: int, last: int | None = None) -> dict[str, float | None]:
    """Dense epochs sent in epochs ``first`` to ``last`` (both included; None: to the end), by
    each measure; None for a measure not logged in the span.

    Example::

        >>> rows = epoch_rows({e: {"comm/epoch/wire_fraction": 0.1 * (e + 1)} for e in range(4)})
        >>> round(span_totals(rows, 1, 2)["wire"], 6), round(span_totals(rows, 3)["wire"], 6)
        (0.5, 0.4)
    """
    chosen = [r for r in rows if r["epoch"] >= first and (last is None or r["epoch"] <= last)]
    values = {measure: [r[measure] for r in chosen if r[measure] is not None] for measure in MEASURES}
    return {measure: sum(v) if v else None for measure, v in values.items()}


def markdown_table(rows: list[dict], baseline: bool = False) -> str:
    """The rows as a markdown table: percentages for accuracy and kept weights, dense epochs for
    traffic (per epoch, then the running total), "-" where a value was not logged. ``baseline``:
    the rows of :func:`against_baseline`, traffic in percent of the baseline's epoch and of the
    whole baseline.

    Example::

        >>> rows = epoch_rows({0: {"val/acc": 0.756, "comm/epoch/paper_fraction": 0.774}})
        >>> print(markdown_table(rows).splitlines()[-1])
        | 0 | - | 75.6 % | 0.774 | - | - | 0.77 | - | - |
    """
    unit = ", % of a baseline epoch" if baseline else ""
    total = ", % of the baseline" if baseline else ""
    head = (
        f"| epoch | kept weights | validation acc. | sent, paper's measure{unit} | sent, wire bytes{unit} "
        f"| sent, Golomb-coded{unit} | total paper{total} | total wire{total} | total Golomb{total} |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        cells = [str(r["epoch"]), _percent(r["kept"]), _percent(r["val_acc"])]
        if baseline:
            cells += [_percent(r[m], 2) for m in MEASURES] + [_percent(r[f"total_{m}"], 3) for m in MEASURES]
        else:
            cells += [number(r[m], 3) for m in MEASURES] + [number(r[f"total_{m}"], 2) for m in MEASURES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
