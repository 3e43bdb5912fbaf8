"""Federated evaluation: each of E seeded devices' own model (shared parameters, its own
log_sigma2) on the whole validation set, against the same computation written out; the module
is left as it was; fit.py's --eval-devices reaches summary.json."""

import copy
import json
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from callbacks import FederatedEvaluation
from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from lightning_fed.federation.evaluation import devices_to_evaluate, evaluate_devices
from modules.classifier import SparseVDClassifier
from tests.conftest import N_TRAIN

ROOT = Path(__file__).resolve().parents[1]


def _trained(data_dir, evaluation=None):
    pl.seed_everything(5, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=16, data_dir=data_dir, val_size=64)
    module = SparseVDClassifier("lenet300_100", num_train=N_TRAIN, lr=3e-2, init_log_sigma2=-4.0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=FederatedStrategy(), max_steps=6, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        callbacks=[evaluation] if evaluation else [], val_check_interval=6,
    )  # fmt: skip
    trainer.fit(module, dm)
    return module, trainer


def _by_hand(module, state: dict, loader) -> float:
    """Device ``state``'s model: the module with that device's local parameters, evaluated."""
    model = copy.deepcopy(module).eval()
    with torch.no_grad():
        for name, value in state["params"].items():
            model.get_parameter(name).copy_(value)
        correct = total = 0
        for images, labels in loader:
            correct += int((model(images).argmax(-1) == labels).sum())
            total += labels.numel()
    return correct / total


def test_each_device_is_evaluated_with_its_own_state_and_the_module_is_left_as_it_was(data_dir):
    module, trainer = _trained(data_dir)
    strategy, loader = trainer.strategy, trainer.datamodule.val_dataloader()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    accuracy = evaluate_devices(strategy, [0, 1, 2, 3], loader)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    states = strategy.devices.state_dict()
    for device in range(4):
        assert accuracy[device] == _by_hand(module, states[device], loader), device
    # the devices' log_sigma2 differ (each trained its own), so their masks and models do
    first = states[0]["params"]["network.1.log_sigma2"]
    assert not torch.equal(first, states[3]["params"]["network.1.log_sigma2"])


def test_the_callback_logs_the_mean_spread_and_worst_of_the_drawn_devices(data_dir):
    evaluation = FederatedEvaluation(num_devices=3, seed=1)
    module, trainer = _trained(data_dir, evaluation)
    chosen = devices_to_evaluate(4, 3, seed=1, epoch=evaluation.epoch)
    assert sorted(evaluation.last["val"]) == chosen
    values = list(evaluation.last["val"].values())
    metrics = trainer.callback_metrics
    assert float(metrics["val/device_acc_mean"]) == sum(values) / 3
    assert float(metrics["val/device_acc_min"]) == min(values)
    assert evaluation.summary()["devices_evaluated"] == chosen


def test_fit_py_eval_devices_writes_the_devices_figures_into_the_summary(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from fit import main

    from tests.test_fit_contract import _process_state_kept

    output = tmp_path / "run"
    argv = ["--dataset", "mnist-5k", "--val-size", "500", "--devices", "4", "--wandb-mode", "disabled"]
    argv += [
        "--network",
        "lenet300_100",
        "--max-rounds",
        "2",
        "--eval-devices",
        "2",
        "--output-dir",
        str(output),
    ]
    with _process_state_kept():
        assert main(argv) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert len(summary["devices_evaluated"]) == 2 and 0 <= summary["device_acc_mean"] <= 1
    assert summary["device_acc_min"] <= summary["device_acc_mean"]


@pytest.mark.slow  # two fit.py runs, one of two processes
def test_two_processes_evaluate_the_same_devices_to_the_same_accuracy(tmp_path):
    """The hosting process broadcasts the device's state, each evaluates its slice, the counts are
    summed: the same figures as one process (the all-gather transport trains the same bits)."""
    from tests.test_fit_cli import fit

    summaries = []
    for processes in ("1", "2"):
        output = tmp_path / f"p{processes}"
        result = fit(
            "--dataset", "mnist-5k", "--val-size", "500", "--devices", "4", "--wandb-mode", "disabled",
            "--network", "lenet300_100", "--max-rounds", "3", "--eval-devices", "3", "--transport", "sparse",
            "--processes", processes, "--output-dir", str(output), cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        summaries.append(json.loads((output / "summary.json").read_text()))
    one, two = summaries
    for key in ("devices_evaluated", "device_acc_mean", "device_acc_std", "device_acc_min"):
        assert one[key] == two[key], key
