"""scripts/reproduce.py: both sides run, resume, the results file and the RESULTS.md table."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_fed.runs.epoch_log import epoch_rows, read_epochs
from lightning_fed.runs.run_lock import hold_run_folder
from scripts.reproduce import fit_command, parse_args, table

pytestmark = pytest.mark.slow  # runs fit.py or spawns processes: left out of the quick check

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """\
devices: 2
dataset: mnist-5k
val_size: 500
network: lenet300_100
limit_train_batches: 2
kl_warmup_epochs: 1
max_epochs: 2
wandb_mode: disabled
"""


def reproduce(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A tiny mnist5k_4 reproduction (dense 1 epoch, sparse 2), with RESULTS.md prose around the table."""
    folder = tmp_path_factory.mktemp("reproduce")
    (folder / "tiny.yaml").write_text(CONFIG)
    markers = "<!-- results:start -->\nold\n<!-- results:end -->"
    (folder / "RESULTS.md").write_text(f"# Results\n\nprose above\n{markers}\nbelow\n")
    args = ["mnist5k_4", "--sparse-config", "tiny.yaml", "--runs-dir", "runs", "--results-dir", "results"]
    result = reproduce(*args, "--results-md", "RESULTS.md", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_both_sides_run_with_their_budgets_and_the_result_is_written(done):
    result = json.loads((done / "results" / "mnist5k_4.json").read_text())
    dense, sparse = result["dense"], result["sparse"]
    assert (dense["epochs"], sparse["epochs"]) == (1, 2)
    assert dense["kept_fraction"] == 1.0 and sparse["kept_fraction"] < 1.0
    assert sparse["comm_wire_fraction"] < dense["comm_wire_fraction"]
    # the sparse run pays for its second epoch: its traffic is counted against the baseline's one
    assert (dense["steps"], sparse["steps"]) == (2, 4)
    assert result["comm_vs_dense"]["paper_fraction"] == pytest.approx(2 * sparse["comm_paper_fraction"])
    assert result["comm_vs_dense"]["wire_fraction"] == pytest.approx(2 * sparse["comm_wire_fraction"])
    assert result["comm_vs_dense"]["golomb_fraction"] is None  # wire bytes are coded payloads now
    assert result["paper"] == {"top1": 98.35, "kept": 1.9, "comm": 11.6}
    assert result["command"].startswith("python scripts/reproduce.py mnist5k_4 --sparse-config tiny.yaml")
    assert (done / "results" / "mnist5k_4_figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = done / "results" / "mnist5k_4_accuracy_against_bytes.png"  # dense and sparse on one plot
    assert both.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert dense["hardware"] == sparse["hardware"] == f"CPU, {os.cpu_count()} cores"


def test_the_table_replaces_only_the_part_between_the_markers(done):
    text = (done / "RESULTS.md").read_text()
    assert text.startswith("# Results\n\nprose above\n<!-- results:start -->\n| setting |")
    assert text.endswith("<!-- results:end -->\nbelow\n") and "\nold\n" not in text
    sparse = json.loads((done / "results" / "mnist5k_4.json").read_text())["sparse"]
    row = next(line for line in text.splitlines() if line.startswith("| mnist5k_4 |"))
    assert f"{100 * sparse['test_acc']:.2f} % (98.35 %)" in row and "| 1 / 2 |" in row


def test_a_second_call_reuses_finished_sides(done):
    logs = {p: p.stat().st_size for p in (done / "runs" / "mnist5k_4").glob("*.log")}
    before = (done / "results" / "mnist5k_4.json").read_text()
    args = ["mnist5k_4", "--sparse-config", "tiny.yaml", "--runs-dir", "runs", "--results-dir", "results"]
    result = reproduce(*args, "--results-md", "RESULTS.md", cwd=done)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p: p.stat().st_size for p in logs} == logs and len(logs) == 2
    assert (
        json.loads((done / "results" / "mnist5k_4.json").read_text())["sparse"]
        == json.loads(before)["sparse"]
    )


def test_a_variant_gets_its_own_row_and_reuses_the_dense_baseline_it_is_given(done):
    dense_log = done / "runs" / "mnist5k_4" / "dense.log"
    size = dense_log.stat().st_size
    args = ["mnist5k_4", "--sparse-config", "tiny.yaml", "--name", "tiny_beta", "--runs-dir", "runs"]
    args += ["--dense-dir", "runs/mnist5k_4/dense", "--results-dir", "results", "--results-md", "RESULTS.md"]
    result = reproduce(*args, cwd=done)
    assert result.returncode == 0, result.stderr[-3000:]
    assert dense_log.stat().st_size == size and not (done / "runs" / "tiny_beta" / "dense").exists()
    variant = json.loads((done / "results" / "tiny_beta.json").read_text())
    original = json.loads((done / "results" / "mnist5k_4.json").read_text())
    assert (variant["setting"], variant["name"]) == ("mnist5k_4", "tiny_beta")
    assert variant["dense"] == original["dense"] and variant["paper"] == original["paper"]
    assert (done / "runs" / "tiny_beta" / "sparse" / "summary.json").exists()
    assert (done / "results" / "tiny_beta_figure2.png").exists()
    rows = [line for line in (done / "RESULTS.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| mnist5k_4", "| tiny_beta"]


@pytest.mark.parametrize(
    ("config", "options", "message"),
    [
        ("tiny.yaml", ["--dense-epochs", "2"], "ran 1 epochs, not the 2 asked; give --dense-epochs 1 or"),
        ("tiny4.yaml", [], "ran on 2 devices, not the 4 of the sparse run; give another --dense-dir"),
    ],
)
def test_a_dense_baseline_of_another_budget_or_device_count_is_refused(done, config, options, message):
    (done / "tiny4.yaml").write_text(CONFIG.replace("devices: 2", "devices: 4"))
    args = ["mnist5k_4", "--sparse-config", config, "--name", "other", "--runs-dir", "runs", *options]
    args += ["--dense-dir", "runs/mnist5k_4/dense", "--results-dir", "results", "--results-md", "RESULTS.md"]
    table_before = (done / "RESULTS.md").read_text()
    result = reproduce(*args, cwd=done)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("reproduce: the dense baseline in runs/mnist5k_4/dense ")
    assert message in last_line
    assert not (done / "runs" / "other").exists() and not (done / "results" / "other.json").exists()
    assert (done / "RESULTS.md").read_text() == table_before


def test_an_interrupted_side_is_resumed(tmp_path):
    assert "--resume" not in fit_command(Path("c.yaml"), tmp_path, True, 3, [])
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    command = fit_command(Path("c.yaml"), tmp_path, True, 3, ["--seed", "1"])
    assert command[-3:] == ["--resume", "--seed", "1"] and "--dense" in command


def test_options_after_the_separator_go_to_fit_and_the_rest_to_reproduce():
    args = parse_args(
        ["fmnist_16", "--dense-epochs", "3", "--runs-dir", "r", "--", "--seed", "1", "--runs-dir"]
    )
    assert (args.dense_epochs, args.runs_dir, args.extra) == (3, "r", ["--seed", "1", "--runs-dir"])


def test_table_of_a_setting_the_paper_did_not_run():
    bytes_ = {"comm_paper_bytes": 20, "comm_wire_bytes": 30, "comm_dense_bytes": 100}
    run = {"test_acc": 0.5, "kept_fraction": 0.1, **bytes_, "epochs": 1, "wall_seconds": 3600.0}
    row = {"setting": "x", "command": "c", "dense": run, "sparse": run}
    row["paper"] = {"top1": None, "kept": None, "comm": None}
    assert "| x | 50.00 % | 50.00 % (-) | 10.00 % (-) | 20.00 % (-) | 30.00 % | - | 1 / 1 | 2.0 h |" in table(
        [row]
    )  # a run counted before the Golomb measure existed has "-" there
    row["sparse"] = {**run, "comm_golomb_bytes": 25}
    assert "| 20.00 % (-) | 30.00 % | 25.00 % | 1 / 1 |" in table([row])
    row["dense"], row["sparse"] = {**run, "hardware": "NVIDIA H200"}, {**run, "hardware": "NVIDIA H200"}
    assert "| 1 / 1 | 2.0 h (NVIDIA H200) |" in table([row])
    row["sparse"] = {**run, "hardware": "CPU, 2 cores"}
    assert "| 1 / 1 | 2.0 h (NVIDIA H200 / CPU, 2 cores) |" in table([row])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cifar_99"], r"setting 'cifar_99' has no config '.*cifar_99.yaml'; give --sparse-config"),
        (["fmnist_16", "--dense-epochs", "0"], r"--dense-epochs must be >= 1, got 0"),
        ([], r"give a setting, or --table"),
        (["fmnist_16", "--name", "a/b"], r"--name 'a/b' is not allowed \(letters, digits, '_', '-'"),
    ],
)
def test_bad_arguments(args, message, tmp_path):
    result = reproduce(*args, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1])
    assert not (tmp_path / "runs").exists()


def test_the_per_epoch_traffic_of_a_real_run_adds_up_to_its_ledger(done):
    sparse = done / "runs" / "mnist5k_4" / "sparse"
    rows = epoch_rows(read_epochs(sparse))
    summary = json.loads((sparse / "summary.json").read_text())
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(r["val_acc"] is not None and 0 < r["kept"] <= 1 for r in rows)
    # equal epochs (2 steps each): the dense epochs sent are epochs x the run's own fraction
    assert rows[-1]["total_golomb"] is None  # the estimate of ledgers before real payloads
    for measure in ("paper", "wire"):
        assert rows[-1][f"total_{measure}"] == pytest.approx(
            2 * summary[f"comm_{measure}_fraction"], rel=1e-5
        )


def test_a_side_whose_folder_a_live_run_holds_fails_with_fit_error_line(tmp_path):
    """A second reproduce.py of a setting still running elsewhere stops, naming why, and writes nothing."""
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    held = hold_run_folder(tmp_path / "runs" / "mnist5k_4" / "dense")
    try:
        args = ["mnist5k_4", "--sparse-config", "tiny.yaml", "--runs-dir", "runs", "--results-dir", "results"]
        result = reproduce(*args, cwd=tmp_path)
    finally:
        os.close(held)
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.search(
        r"reproduce: dense run failed \(exit 2: fit.py: error: --output-dir '.*dense' is in use",
        result.stderr,
    )
    assert not (tmp_path / "results").exists()
