"""Per-epoch figures read back from a run's CSV logs: lightning_fed.runs.epoch_log, epoch_table.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger

from lightning_fed.runs.epoch_log import epoch_rows, read_epochs, span_totals
from scripts.epoch_table import main

ROOT = Path(__file__).resolve().parents[1]


def _log(run: Path, rows: list[dict]) -> None:
    """One fit.py call's CSV version, written by Lightning's own CSVLogger (``RUN/csv/version_N``)."""
    logger = CSVLogger(run, name="csv")
    for step, row in enumerate(rows):
        logger.log_metrics(row, step=step)
    logger.save()


def _epoch(epoch: int, kept: float, acc: float, sent: float) -> dict:
    return {
        "epoch": epoch,
        "sparsity/total": kept,
        "val/acc": acc,
        "comm/epoch/paper_fraction": sent,
        "comm/epoch/wire_fraction": 1.5 * sent,
        "comm/epoch/wire_bytes": 1000.0 * sent,
    }


@pytest.fixture
def resumed_run(tmp_path) -> Path:
    """A run stopped during epoch 2 (step rows only) and resumed from the end of epoch 1."""
    _log(tmp_path, [_epoch(0, 0.6, 0.7, 0.8), _epoch(1, 0.3, 0.8, 0.4), {"epoch": 2, "train/loss": 9.0}])
    _log(tmp_path, [{"epoch": 2, "train/loss": 0.5}, _epoch(2, 0.2, 0.85, 0.2), _epoch(3, 0.1, 0.9, 0.1)])
    _log(tmp_path, [{"epoch": 4, "test/acc": 0.88}])  # the test after the last epoch: no row
    return tmp_path


def test_a_resumed_run_reads_as_one_with_running_totals(resumed_run):
    rows = epoch_rows(read_epochs(resumed_run))
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert [r["val_acc"] for r in rows] == [0.7, 0.8, 0.85, 0.9]
    assert [r["total_paper"] for r in rows] == pytest.approx([0.8, 1.2, 1.4, 1.5])
    assert rows[-1]["total_wire"] == pytest.approx(1.5 * 1.5)
    assert read_epochs(resumed_run)[2]["train/loss"] == 0.5  # the later version wins


def test_a_measure_never_logged_stays_unknown_rather_than_zero(resumed_run):
    rows = epoch_rows(read_epochs(resumed_run))
    assert rows[-1]["golomb"] is None and rows[-1]["total_golomb"] is None
    spans = span_totals(rows, 1, 2)
    assert spans["paper"] == pytest.approx(0.6) and spans["golomb"] is None


def test_the_script_prints_the_chosen_rows_and_spans(resumed_run, capsys):
    main([str(resumed_run), "--epochs", "1,3,7", "--spans", "0-1,2-,9-"])
    out = capsys.readouterr().out
    assert "| 1 | 30.0 % | 80.0 % | 0.400 | 0.600 | - | 1.20 | 1.80 | - |" in out
    assert "| 3 | 10.0 % | 90.0 % | 0.100 | 0.150 | - | 1.50 | 2.25 | - |" in out
    assert "| 0 |" not in out and "not logged yet: epochs 7" in out
    assert "| 0-1 | 1.20 | 1.80 | - |" in out and "| 2-3 | 0.30 | 0.45 | - |" in out
    assert "| 9- | - | - | - |" in out  # an open span not reached yet


@pytest.fixture
def dense_run(tmp_path) -> Path:
    """A dense baseline's folder: 4,000 bytes in 2 epochs (2,000 an epoch)."""
    folder = tmp_path / "dense"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"comm_dense_bytes": 4000, "epochs": 2}))
    return folder


def test_traffic_against_a_baseline_counts_its_bytes_not_the_runs_epochs(resumed_run, dense_run, capsys):
    # wire bytes of epochs 0-3: 800, 400, 200, 100 -> 40, 20, 10, 5 % of a baseline epoch (2,000 bytes);
    # totals 20, 30, 35, 37.5 % of the baseline's 4,000; the paper's measure logged no bytes: unknown
    main([str(resumed_run), "--dense-dir", str(dense_run), "--epochs", "1,3", "--spans", "0-1"])
    out = capsys.readouterr().out
    assert "| 1 | 30.0 % | 80.0 % | - | 20.00 % | - | - | 30.000 % | - |" in out
    assert "| 3 | 10.0 % | 90.0 % | - | 5.00 % | - | - | 37.500 % | - |" in out
    assert "% of the baseline" in out
    assert "| 0-1 | - | 0.60 | - |" in out  # baseline epochs: 0.4 + 0.2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{run}/nothing"], "has no csv/version_*/metrics.csv"),
        (["{run}", "--epochs", "1,x"], "--epochs '1,x': give epoch numbers >= 0"),
        (["{run}", "--epochs", "-1"], "--epochs '-1': give epoch numbers >= 0"),
        (["{run}", "--spans", "5-2"], "--spans '5-2': give spans as FIRST-LAST or FIRST-"),
        (
            ["{run}", "--dense-dir", "{run}/csv"],
            "--dense-dir '{run}/csv': {run}/csv/summary.json: cannot read it",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(resumed_run, args, message):
    before = sorted(p.relative_to(resumed_run) for p in resumed_run.rglob("*"))
    command = [sys.executable, str(ROOT / "scripts" / "epoch_table.py")]
    result = subprocess.run(
        command + [a.format(run=resumed_run) for a in args], capture_output=True, text=True
    )
    assert result.returncode != 0 and message.format(run=resumed_run) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(resumed_run) for p in resumed_run.rglob("*")) == before
