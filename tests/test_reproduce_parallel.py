"""scripts/reproduce_parallel.py: rows run side by side, a shared baseline once, the deadline."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_fed.runs.run_lock import hold_run_folder
from tests.test_reproduce import CONFIG

pytestmark = pytest.mark.slow  # runs fit.py or spawns processes: left out of the quick check

ROOT = Path(__file__).resolve().parents[1]
PATHS = "--runs-dir runs --results-dir results --results-md RESULTS.md"
ROWS = f"""\
# a setting and a variant of it that shares its dense baseline
mnist5k_4 --sparse-config tiny.yaml {PATHS}
mnist5k_4 --sparse-config beta.yaml --name beta --dense-dir runs/mnist5k_4/dense {PATHS}
"""


def parallel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "reproduce_parallel.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    (tmp_path / "beta.yaml").write_text(CONFIG + "kl_final_weight: 0.1\n")
    (tmp_path / "RESULTS.md").write_text("# Results\n\n<!-- results:start -->\n<!-- results:end -->\n")
    (tmp_path / "rows").write_text(ROWS)
    return tmp_path


def test_rows_run_side_by_side_and_are_written_by_reproduce(folder):
    result = parallel("rows", cwd=folder)
    assert result.stdout.count(" start ") == 3 and result.stdout.index(" end ") > result.stdout.rindex(
        " start "
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    runs = folder / "runs"
    # three sides: the shared dense baseline ran once, with one log
    assert sorted(p.relative_to(runs).as_posix() for p in runs.glob("*/*.log")) == [
        "beta/sparse.log", "mnist5k_4/dense.log", "mnist5k_4/sparse.log",
    ]  # fmt: skip
    base = json.loads((folder / "results" / "mnist5k_4.json").read_text())
    beta = json.loads((folder / "results" / "beta.json").read_text())
    assert base["dense"] == beta["dense"] and base["sparse"] != beta["sparse"]
    assert beta["command"] == "python scripts/reproduce.py " + ROWS.splitlines()[2]
    table = (folder / "RESULTS.md").read_text()
    assert "| mnist5k_4 |" in table and "| beta |" in table


def test_the_deadline_stops_every_side_and_no_row_is_written(folder):
    result = parallel("rows", "--deadline-s", "0.1", cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("stopped at the deadline") == 3
    assert "not finished; run this again to resume it" in result.stdout
    assert not (folder / "results").exists()


def test_a_cap_on_device_processes_runs_the_sides_one_at_a_time_in_row_order(folder):
    result = parallel("rows", "--max-device-processes", "3", cwd=folder)  # each side has 2 devices
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    events = [line.split("] ")[1] for line in result.stdout.splitlines() if line.startswith("[")]
    assert [event.split()[0] for event in events] == ["start", "end"] * 3
    started = [event.split()[1] for event in events[::2]]
    assert started == ["runs/mnist5k_4/dense", "runs/mnist5k_4/sparse", "runs/beta/sparse"]
    assert (folder / "results" / "beta.json").exists()


def test_a_side_wider_than_the_cap_is_refused_before_anything_starts(folder):
    result = parallel("rows", "--max-device-processes", "1", cwd=folder)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("needs 2 device processes, more than --max-device-processes 1")
    assert not (folder / "runs").exists()


def test_rows_that_need_a_shared_baseline_with_other_budgets_are_refused_before_anything_starts(folder):
    rows = ROWS.splitlines()
    (folder / "rows").write_text(f"{rows[1]}\n{rows[2]} --dense-epochs 2\n")
    result = parallel("rows", cwd=folder)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("for 2 epochs on 2 devices, an earlier row for 1 on 2")
    assert not (folder / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["absent"], "rows file 'absent' does not exist"),
        (["rows", "--deadline-s", "0"], "--deadline-s must be > 0, got 0.0"),
        (["rows", "--max-device-processes", "0"], "--max-device-processes must be >= 1, got 0"),
    ],
)
def test_bad_arguments(args, message, folder):
    result = parallel(*args, cwd=folder)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(message)
    assert not (folder / "runs").exists()


def test_a_side_a_live_run_holds_fails_with_its_reason_and_the_others_go_on(folder):
    """A second runner (or a stale one still running) cannot start a duplicate into a side in use."""
    held = hold_run_folder(folder / "runs" / "mnist5k_4" / "dense")
    try:
        result = parallel("rows", cwd=folder)
    finally:
        os.close(held)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(
        r"dense: exit 2 \(fit.py: error: --output-dir '.*dense' is in use by a fit.py", result.stdout
    )
    assert (folder / "runs" / "mnist5k_4" / "sparse" / "summary.json").exists()  # the other sides ran
    assert result.stdout.count("not finished; run this again to resume it") == 2
