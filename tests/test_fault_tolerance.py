"""Runs that survive: atomic checkpoints, kill -9 and resume, Ctrl-C, non-finite numbers, foreign files."""

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import RunCheckpoint
from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from lightning_fed.federation import DeviceFailed, NonFiniteError
from lightning_fed.federation.checkpoint import CHECKPOINT_KEY, AtomicCheckpointIO, files_of
from lightning_fed.nn.init_from import read_checkpoint
from modules.classifier import SparseVDClassifier
from tests.conftest import N_TRAIN
from tests.helpers.small_fit import small_fit

ROOT = Path(__file__).resolve().parents[1]


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot be saved")


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.arange(4.0)}, path)
    with pytest.raises(RuntimeError, match="cannot be saved"):  # fails after the tensors' bytes began
        io.save_checkpoint({"step": 2, "weights": torch.zeros(1000), "extra": _Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # and nothing half-written beside it


def _small_fit(tmp_path, callback, epochs=2):
    seen = []

    class Look(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            last = tmp_path / "last.ckpt"
            seen.append(torch.load(last, weights_only=True)["global_step"] if last.exists() else None)

    data = TensorDataset(torch.randn(48, 1, 28, 28), torch.randint(0, 10, (48,)))
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[callback, Look()], logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    model = SparseVDClassifier("lenet300_100", num_train=48)
    trainer.fit(model, DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
    return seen


def test_last_ckpt_is_saved_every_n_steps_and_at_each_epoch_end_in_one_file(tmp_path):
    seen = _small_fit(tmp_path, RunCheckpoint(tmp_path, every_n_steps=2))
    assert seen == [None, None, 2, 3, 4, 4]  # 3 steps an epoch: step 2, the end of epoch 0 (3), step 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".ckpt") == ["last.ckpt"]


def test_last_ckpt_at_epoch_ends_only_by_default(tmp_path):
    assert _small_fit(tmp_path, RunCheckpoint(tmp_path)) == [None, None, None, 3, 3, 3]


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_a_bad_checkpoint_interval_is_a_one_line_error(value):
    with pytest.raises(ValueError, match=r"^every_n_steps must be an integer >= 0, got "):
        RunCheckpoint("x", every_n_steps=value)


def _rounds_fit(data_dir, root, max_steps, every=None, resume=None, store="disk"):
    from lightning_fed.nn import variational

    strategy = FederatedStrategy(devices_per_round=2, local_steps=2, device_store=store)
    network = lambda: variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))  # noqa: E731
    return small_fit(data_dir, root, network, strategy, max_steps, resume, every)


def test_the_files_of_a_federated_checkpoint_are_named_by_step_and_older_steps_removed(data_dir, tmp_path):
    """Device rows saved at step 2, then 4: only step 4's remain, and the checkpoint names them."""
    _rounds_fit(data_dir, tmp_path, max_steps=4, every=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 4 and checkpoint[CHECKPOINT_KEY]["files_step"] == 4
    assert [p.name for p in files_of(last, 0)] == ["last.ckpt.rows-0.step-4"]
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.ckpt.rows-0.step-4"]


def test_a_resume_from_a_mid_epoch_checkpoint_ends_as_the_run_that_never_stopped(data_dir, tmp_path):
    whole, _ = _rounds_fit(data_dir, tmp_path / "whole", max_steps=7)
    _rounds_fit(data_dir, tmp_path / "cut", max_steps=3, every=3)
    ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    resumed, _ = _rounds_fit(data_dir, tmp_path / "cut", max_steps=7, resume=str(ckpt))
    assert all(torch.equal(whole.state_dict()[k], v) for k, v in resumed.state_dict().items())


class _NaNAt(SparseVDClassifier):
    """The loss of ``device`` turns NaN at ``step``."""

    def __init__(self, *args, step: int, device: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bad_step, self.bad_device = step, device

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        strategy = self.trainer.strategy
        device = strategy.devices.current if strategy.devices is not None else None
        if self.trainer.global_step == self.bad_step and device == self.bad_device:
            return loss * math.nan
        return loss


def test_a_non_finite_loss_stops_the_run_naming_device_and_step_and_the_last_checkpoint_stays(
    data_dir, tmp_path
):
    pl.seed_everything(3, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=16, data_dir=data_dir, val_size=64)
    module = _NaNAt("lenet300_100", num_train=N_TRAIN, step=3, device=2)
    checkpoints = tmp_path / "checkpoints"
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=FederatedStrategy(), max_steps=6, logger=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=[RunCheckpoint(checkpoints, every_n_steps=1)],
    )  # fmt: skip
    with pytest.raises(
        NonFiniteError, match=r"^device 2's loss is not finite \(NaN or inf\) at step 3 \(epoch 0\)"
    ):
        trainer.fit(module, dm)
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 3  # the steps before
    assert trainer.global_step == 3


def test_foreign_checkpoints_load_weights_only_and_a_corrupt_or_truncated_one_is_a_one_line_error(tmp_path):
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hook": nn.ReLU()}, pickled)  # a module: code that would run on load
    with pytest.raises(ValueError, match=r"holds Python objects beyond tensors .* weights_only=True"):
        read_checkpoint(pickled)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(100_000)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (truncated, tmp_path / "text.ckpt"):
        if path.name == "text.ckpt":
            path.write_text("not a checkpoint")
        for mmap in (False, True):  # mmap: how the resume check looks at shapes
            with pytest.raises(ValueError, match=r"^checkpoint '.*' is not a readable PyTorch file \(\w+\)$"):
                read_checkpoint(path, mmap=mmap)
    for mmap in (False, True):
        assert torch.equal(read_checkpoint(good, mmap=mmap)["state_dict"]["w"], torch.ones(100_000))
    with pytest.raises(ValueError, match=r"holds Python objects beyond tensors"):
        read_checkpoint(pickled, mmap=True)


# ------------------------------------------------------------------ fit.py, killed and interrupted
FIT_ARGS = [
    "--dataset", "mnist-5k", "--val-size", "500", "--devices", "2", "--network", "lenet300_100",
    "--limit-train-batches", "3", "--kl-warmup-epochs", "2", "--lr", "0.003", "--max-epochs", "4",
    "--checkpoint-every-n-steps", "1", "--wandb-mode", "disabled",
]  # fmt: skip


def _fit_command(output: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "fit.py"), *FIT_ARGS, "--output-dir", str(output), *extra]


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_SILENT": "true"}
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, killed as a whole
    )  # fmt: skip


def _wait_for_step(process: subprocess.Popen, checkpoint: Path, step: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["global_step"] >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of step {step} within {timeout} s")


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The run that never stopped."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    _run(_fit_command(folder), folder.parent)
    return folder


def _assert_same_run(run: Path, straight: Path) -> None:
    ours, theirs = (read_checkpoint(folder / "checkpoints" / "last.ckpt") for folder in (run, straight))
    assert ours["global_step"] == theirs["global_step"] == 12
    for name, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], value), name
    for device, state in theirs[CHECKPOINT_KEY]["devices"].items():
        for name, value in state["params"].items():
            assert torch.equal(ours[CHECKPOINT_KEY]["devices"][device]["params"][name], value), (device, name)
    assert json.loads((run / "ledger.json").read_text()) == json.loads((straight / "ledger.json").read_text())
    ran, reference = (json.loads((f / "summary.json").read_text()) for f in (run, straight))
    assert ran["test_acc"] == reference["test_acc"] and ran["kept_fraction"] == reference["kept_fraction"]


@pytest.mark.slow
def test_a_run_killed_with_sigkill_and_resumed_ends_as_the_run_that_never_stopped(straight, tmp_path):
    run = tmp_path / "run"
    process = _start(_fit_command(run), tmp_path)
    _wait_for_step(process, run / "checkpoints" / "last.ckpt", step=5)  # mid-epoch 1 (3 steps an epoch)
    os.killpg(process.pid, signal.SIGKILL)  # the whole process group, as a machine losing power
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()
    _run(_fit_command(run, "--resume"), tmp_path)
    _assert_same_run(run, straight)


@pytest.mark.slow
def test_ctrl_c_saves_says_where_and_how_to_continue_and_the_continued_run_ends_the_same(straight, tmp_path):
    run = tmp_path / "run"
    process = _start(_fit_command(run), tmp_path)
    _wait_for_step(process, run / "checkpoints" / "last.ckpt", step=4)
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("fit.py: interrupted at epoch "), stderr[-3000:]
    step = int(line.split("step ")[1].split(";")[0])
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted_at_step"] == step and summary["test_acc"] is None and summary["steps"] == step
    again = shlex.split(line.split("continue with: ")[1])
    assert again[-1] == "--resume"
    _run(again, tmp_path)
    _assert_same_run(run, straight)


# ------------------------------------------------------------------------------ a device that dies
class _FakeProcess:
    def __init__(self, code):
        self.returncode = code

    def poll(self):
        return self.returncode


def test_the_watchdog_names_a_killed_device_process_at_once_and_an_erroring_one_after_its_grace():
    from lightning_fed.federation.watchdog import ProcessWatchdog

    processes = {1: _FakeProcess(None), 2: _FakeProcess(0), 3: _FakeProcess(1)}
    watchdog = ProcessWatchdog(
        processes, describe=lambda rank: f"devices {4 * rank}-{4 * rank + 3}", grace=3.0
    )
    assert watchdog.lost(now=100.0) is None  # 3 exited with an error: the launcher may report it first
    assert watchdog.lost(now=102.9) is None
    assert watchdog.lost(now=103.0) == (
        "lightning-fed: device process 3 (devices 12-15) exited with code 1; "
        "stopping every process of the run (the last checkpoint is whole)"
    )
    processes[1].returncode = -9
    assert watchdog.lost(now=103.5).startswith(
        "lightning-fed: device process 1 (devices 4-7) was killed by signal 9"
    )


_CLOSES_AT_EXIT = """
import atexit, sys, torch.distributed as dist
from lightning_fed.federation import watchdog
atexit.register(lambda: print("open at exit:", dist.is_initialized()))  # runs after the later ones
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
watchdog.close_process_group_at_exit()
watchdog.close_process_group_at_exit()
print("registered:", watchdog._closing_registered)
"""


def test_a_process_that_ends_normally_closes_its_gloo_group_before_the_interpreter_shuts_down(tmp_path):
    """Lightning closes NCCL groups only; an open gloo group can abort a finished run at exit."""
    result = subprocess.run(
        [sys.executable, "-c", _CLOSES_AT_EXIT, str(tmp_path / "store")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["registered: True", "open at exit: False"]


class _RaisesAt(SparseVDClassifier):
    def training_step(self, batch, batch_idx):
        if self.trainer.global_step == 1 and self.trainer.strategy.devices.current == 2:
            raise ValueError("the batch is malformed")
        return super().training_step(batch, batch_idx)


def test_a_device_that_raises_in_a_one_process_federation_is_named_with_the_step(data_dir):
    pl.seed_everything(3, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=16, data_dir=data_dir, val_size=64)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=FederatedStrategy(), max_steps=3, logger=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        enable_checkpointing=False,
    )  # fmt: skip
    with pytest.raises(
        DeviceFailed, match=r"^device 2 failed at step 1: ValueError: the batch is malformed$"
    ) as info:
        trainer.fit(_RaisesAt("lenet300_100", num_train=N_TRAIN), dm)
    assert isinstance(info.value.__cause__, ValueError)


def test_fit_py_reports_a_failed_device_in_one_line_and_keeps_the_traceback(tmp_path, monkeypatch, capsys):
    import scripts.fit_run as fit_run
    from scripts.fit import parse_args

    def fails(*args, **kwargs):
        try:
            raise KeyError("label")
        except KeyError as error:
            raise DeviceFailed(5, 40, error) from error

    monkeypatch.setattr(fit_run, "fit_test_and_write", fails)
    args = parse_args(
        [
            "--dataset",
            "mnist-5k",
            "--val-size",
            "500",
            "--devices",
            "8",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert fit_run.run(args) == 1
    said, line = capsys.readouterr().err.strip().splitlines()  # where the data came from, then the failure
    assert said.startswith("fit.py: data: mnist-5k from "), said
    traceback_file = tmp_path / "run" / "traceback.txt"
    assert line == (
        f"fit.py: stopped: device 5 failed at step 40: KeyError: 'label' (traceback in {traceback_file}); "
        "no checkpoint was written yet"
    )
    assert "raise KeyError" in traceback_file.read_text()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_a_device_process_killed_stops_the_run_within_60_s_naming_it_and_the_checkpoint_is_whole(tmp_path):
    from lightning_fed.federation.checkpoint import device_states_of

    run = tmp_path / "run"
    process = _start(_fit_command(run, "--processes", "2", "--max-epochs", "40"), tmp_path)
    checkpoint = run / "checkpoints" / "last.ckpt"
    _wait_for_step(process, checkpoint, step=2)
    (device_process,) = [
        p for p in _children(process.pid) if "fit.py" in Path(f"/proc/{p}/cmdline").read_text()
    ]
    os.kill(device_process, signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - killed < 60 and process.returncode != 0
    assert (
        "lightning-fed: device process 1 (device 1) was killed by signal 9 (SIGKILL); stopping every"
        in stderr
    )
    saved = read_checkpoint(checkpoint)  # whole: it loads, and the sidecar of its step is there
    assert sorted(device_states_of(saved, checkpoint)) == [0, 1]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_device_processes_die_with_a_launcher_killed_by_sigkill(tmp_path):
    run = tmp_path / "run"
    process = _start(_fit_command(run, "--processes", "2", "--max-epochs", "40"), tmp_path)
    _wait_for_step(process, run / "checkpoints" / "last.ckpt", step=2)
    children = _children(process.pid)
    assert children
    os.kill(process.pid, signal.SIGKILL)  # the launcher alone, not its process group
    process.communicate()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_process_that_asked_to_die_with_its_parent_does(tmp_path):
    """A sleeping child (not in any collective) goes when its parent is killed."""
    asked = tmp_path / "asked"
    child = (
        "import pathlib, time\n"
        "from lightning_fed.federation.watchdog import die_with_parent\n"
        f"assert die_with_parent()\npathlib.Path({str(asked)!r}).write_text('yes')\ntime.sleep(120)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child!r}], cwd={str(ROOT)!r})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    pid = int(process.stdout.readline())
    deadline = time.monotonic() + 120
    while not asked.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert asked.exists() and _alive(pid)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
