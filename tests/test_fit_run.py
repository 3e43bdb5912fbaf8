"""scripts/fit.py end to end on real data (the MNIST subset), 2 devices: files, W&B records, resume."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks import RunCheckpoint, load_sparse_state_dict
from datamodules import FederatedDataModule
from datamodules.datasets import MNIST_5K_SOURCE
from lightning_fed.federation.checkpoint import CHECKPOINT_KEY
from lightning_fed.nn.init_from import read_checkpoint
from modules.classifier import SparseVDClassifier
from scripts.pruning_report import main as pruning_report
from tests.helpers.wandb_records import history_rows, read_records, run_file

pytestmark = pytest.mark.slow  # runs fit.py or spawns processes: left out of the quick check

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--dataset", "mnist-5k", "--val-size", "500", "--devices", "2", "--network", "lenet300_100",
    "--limit-train-batches", "3", "--kl-warmup-epochs", "2", "--lr", "0.003",
    "--log-every-n-steps", "1",
]  # fmt: skip


def fit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "fit.py"), *ARGS, *args]
    env = {**os.environ, "WANDB_SILENT": "true"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 2-epoch run, then the same run resumed to 3 epochs; returns its folder."""
    folder = tmp_path_factory.mktemp("fit") / "run"
    fit("--max-epochs", "2", "--output-dir", str(folder), cwd=folder.parent)
    (folder / "first_summary.json").write_text((folder / "summary.json").read_text())
    (folder / "first_ledger.json").write_text((folder / "ledger.json").read_text())
    resumed = fit("--max-epochs", "3", "--output-dir", str(folder), "--resume", cwd=folder.parent)
    (folder.parent / "printed.txt").write_text(resumed.stdout)
    (folder.parent / "stderr.txt").write_text(resumed.stderr)
    return folder


def test_summary_ledger_plots_and_printed_table(run):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["devices"] == 2 and summary["epochs"] == 3 and summary["steps"] == 9
    assert 0 < summary["kept_fraction"] < 1 and 0 < summary["comm_paper_fraction"] < 1
    assert summary["comm_paper_bytes"] <= summary["comm_wire_bytes"] < summary["comm_dense_bytes"]
    assert summary["comm_transport_bytes"] == 0 and summary["processes"] == 1  # one process hosts both
    assert summary["export_bytes"] < summary["export_dense_bytes"]
    assert summary["hardware"] == f"CPU, {os.cpu_count()} cores"
    printed = (run.parent / "printed.txt").read_text()
    assert re.search(rf"^trained on +CPU, {os.cpu_count()} cores$", printed, re.MULTILINE), printed
    assert summary["dataset"] == "mnist-5k" and summary["data_source"] == MNIST_5K_SOURCE
    assert re.search(rf"^data +mnist-5k from {re.escape(MNIST_5K_SOURCE)}$", printed, re.MULTILINE), printed
    said = (run.parent / "stderr.txt").read_text()
    line = f"fit.py: data: mnist-5k from {MNIST_5K_SOURCE} (3,500 training samples over 2 devices, 500 for"
    assert said.count(line) == 1, said[-3000:]
    ledger = json.loads((run / "ledger.json").read_text())
    assert ledger["total"]["steps"] == 9 and sorted(ledger["epochs"]) == ["0", "1", "2"]
    for name in ("transmitted_fraction", "cumulative_bytes", "kept_per_layer", "accuracy_against_bytes"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_screen_says_only_fit_py_s_lines_and_lightning_s_go_to_fit_log(run):
    """Lightning's banner, model summary and "fit stopped" lines land in OUTPUT/fit.log; no advice
    to sync metrics that are the same everywhere or device 0's on purpose, no warning Lightning
    prints about itself; what is left on stderr is fit.py's own one-line events."""
    stderr = (run.parent / "stderr.txt").read_text()
    log = (run / "fit.log").read_text()
    assert "GPU available" in log and "`Trainer.fit` stopped" in log and "Trainable params" in log
    assert not re.search(r"recommended to use `self.log\('(comm|sparsity)/", stderr), stderr[-3000:]
    screen = [line for line in stderr.splitlines() if line.strip()]
    assert screen and all(line.startswith("fit.py: ") for line in screen), screen
    assert any(line.startswith("fit.py: W&B: offline run in ") for line in screen), screen


def test_resume_continues_the_ledger_of_the_first_run(run):
    first = json.loads((run / "first_ledger.json").read_text())
    resumed = json.loads((run / "ledger.json").read_text())
    assert resumed["history"][:6] == first["history"] and len(resumed["history"]) == 9


def test_exported_sparse_model_has_the_runs_test_accuracy_to_the_last_digit(run):
    summary = json.loads((run / "summary.json").read_text())
    dm = FederatedDataModule("mnist-5k", 1, val_size=500)
    dm.setup("test")
    model = SparseVDClassifier("lenet300_100", num_train=dm.num_train, dense=True)
    model.load_state_dict(load_sparse_state_dict(run / "sparse_model.pt"))
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    accuracy = trainer.test(model, dm, verbose=False)[0]["test/acc"]
    assert accuracy == summary["test_acc"] and accuracy > 0.5


def test_pruning_report_reads_the_runs_checkpoint_and_each_devices_log_sigma2(run, capsys, tmp_path):
    checkpoint_path = run / "checkpoints" / "last.ckpt"
    kept = json.loads((run / "summary.json").read_text())["kept_fraction"]
    pruning_report([str(checkpoint_path)])
    device0 = capsys.readouterr().out
    assert re.search(rf"^\| all \| 266,200 \| {100 * kept:.1f} % \|", device0, re.MULTILINE), device0
    pruning_report([str(checkpoint_path), "--device", "0"])
    assert capsys.readouterr().out == device0  # the checkpointed model holds device 0's log_sigma2
    checkpoint = read_checkpoint(checkpoint_path)
    local = checkpoint[CHECKPOINT_KEY]["devices"]  # one process hosted both devices: all in the file
    same = [torch.equal(local[0]["params"][k], local[1]["params"][k]) for k in local[1]["params"]]
    assert same and not all(same)  # device 1 learned its own log_sigma2 (past the table's 2 decimals)
    for key, log_sigma2 in local[1]["params"].items():  # so that --device 1 prunes everything
        local[1]["params"][key] = log_sigma2 + 30.0
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    pruning_report([str(tmp_path / "edited.ckpt"), "--device", "1"])
    assert re.search(r"^\| all \| 266,200 \| 0\.0 % \|", capsys.readouterr().out, re.MULTILINE)
    pruning_report([str(tmp_path / "edited.ckpt")])
    assert capsys.readouterr().out == device0


def test_wandb_offline_runs_hold_config_metrics_table_and_plots(run):
    files = sorted((run / "wandb").rglob("run-*.wandb"))
    assert len(files) == 2  # the first run and its resumption, under one id
    assert len({file.parent.name.rsplit("-", 1)[-1] for file in files}) == 1
    records = [r for file in files for r in read_records(file)]
    kinds = {r.WhichOneof("record_type") for r in records}
    assert {"run", "history", "metric"} <= kinds
    config = {i.key: i.value_json for r in records if r.HasField("run") for i in r.run.config.update}
    assert json.loads(config["devices"]) == 2 and json.loads(config["network"]) == "lenet300_100"
    rows = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.HasField("history")
    ]
    keys = set().union(*rows)
    expected = {
        "comm/step/upload", "comm/total/wire_bytes", "comm/total/paper_fraction", "comm/epoch/wire_fraction",
        "comm/total/transport_bytes", "comm/epoch/paper_fraction",
        "sparsity/total", "sparsity/network.1", "train/loss", "train/kl", "val/acc", "test/acc",
        "export/sparse_bytes", "summary/_type", "plots/_type",
    }  # fmt: skip
    assert expected <= keys, expected - keys
    bytes_axis = [row["comm/total/wire_bytes"] for row in rows if "val/acc" in row]
    assert len(bytes_axis) == 3 and bytes_axis == sorted(bytes_axis)  # val/acc has its bytes x value
    metric_records = [r.metric for r in records if r.HasField("metric")]
    assert any(m.glob_name == "val/*" and m.step_metric == "comm/total/wire_bytes" for m in metric_records)


def test_a_run_resumed_from_a_moved_folder_still_writes_last_ckpt(tmp_path):
    """Lightning forgets its last checkpoint's path when the folder moves; last.ckpt must advance."""
    data = TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))

    def fit_to(epochs: int, output: Path, ckpt_path=None) -> None:
        trainer = pl.Trainer(
            max_epochs=epochs, callbacks=[RunCheckpoint(output / "checkpoints")], logger=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=output,
        )  # fmt: skip
        model = SparseVDClassifier("lenet300_100", num_train=32)
        trainer.fit(
            model, DataLoader(data, batch_size=16), DataLoader(data, batch_size=16), ckpt_path=ckpt_path
        )

    fit_to(1, tmp_path / "first")
    moved = (tmp_path / "first").rename(tmp_path / "moved")
    fit_to(2, moved, ckpt_path=moved / "checkpoints" / "last.ckpt")
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1
    assert not (moved / "checkpoints" / "last-v1.ckpt").exists()


def test_online_mode_without_a_network_logs_offline_and_trains(tmp_path):
    """W&B unreachable (a closed port): one line on stderr, the run trains and logs offline."""
    env = {
        **os.environ,
        "WANDB_API_KEY": "0" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_SILENT": "true",
    }
    command = [sys.executable, str(ROOT / "scripts" / "fit.py"), *ARGS, "--max-epochs", "1"]
    command += ["--wandb-mode", "online", "--output-dir", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fit.py: W&B online unreachable (" in result.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == 1
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")  # beside the failed online attempt
    rows = history_rows(run_file(offline))
    assert any("val/acc" in row and "comm/total/wire_bytes" in row for row in rows)


def test_the_same_command_and_seed_give_the_same_run_and_a_resumed_run_ends_like_it(run, tmp_path):
    straight = tmp_path / "straight"
    fit("--max-epochs", "3", "--output-dir", str(straight), "--wandb-mode", "disabled", cwd=tmp_path)
    ours, theirs = (read_checkpoint(folder / "checkpoints" / "last.ckpt") for folder in (run, straight))
    for name, value in theirs["state_dict"].items():  # the fixture's run stopped after 2 epochs and resumed
        assert torch.equal(ours["state_dict"][name], value), name
    for device, state in theirs[CHECKPOINT_KEY]["devices"].items():
        for name, value in state["params"].items():
            assert torch.equal(ours[CHECKPOINT_KEY]["devices"][device]["params"][name], value), (device, name)
    assert json.loads((run / "ledger.json").read_text()) == json.loads((straight / "ledger.json").read_text())


def test_resuming_with_another_device_count_is_one_line_and_touches_nothing(run, tmp_path):
    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    command = [sys.executable, str(ROOT / "scripts" / "fit.py"), *ARGS, "--output-dir", str(run), "--resume"]
    command[command.index("--devices") + 1] = "4"
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].endswith("is a run of 2 devices; resume it with --devices 2")
    assert {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
