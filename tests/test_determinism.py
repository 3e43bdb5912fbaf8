"""Same seed, same result: every network, the paper's protocol and sampled rounds, bit for bit.

The transports under several processes are in test_strategy.py (slow); fit.py's own path twice,
and a resumed run against a straight one, in test_fit_run.py and test_fault_tolerance.py.
"""

import pytest
import pytorch_lightning as pl
import torch

from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from modules.catalog import TEXT_NETWORKS
from modules.classifier import SparseVDClassifier
from modules.networks import NETWORKS
from tests.conftest import N_TRAIN


def _run(data_dir, network: str, rounds: dict) -> dict:
    pl.seed_everything(11, verbose=False)
    if network in TEXT_NETWORKS:  # 4 speaking roles (data_dir: the parsed plays' cache)
        dm = FederatedDataModule("shakespeare", 4, batch_size=8, data_dir=data_dir)
        module = SparseVDClassifier(network, num_train=N_TRAIN, num_classes=81)
    else:
        dm = FederatedDataModule("mnist", 4, batch_size=8, data_dir=data_dir, val_size=64, augment=True)
        module = SparseVDClassifier(network, num_train=N_TRAIN)
    strategy = FederatedStrategy(**rounds)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_steps=2, logger=False, limit_val_batches=1,
        val_check_interval=2, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, dm)
    return {
        "state": module.state_dict(),
        "devices": strategy.devices.state_dict(),
        "ledger": [vars(t) for t in strategy.ledger.history],
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }


def _assert_same(first: dict, second: dict) -> None:
    assert first["ledger"] == second["ledger"] and first["metrics"] == second["metrics"]
    for name, value in first["state"].items():
        assert torch.equal(second["state"][name], value), name
    for device, state in first["devices"].items():
        for name, value in state["params"].items():
            assert torch.equal(second["devices"][device]["params"][name], value), (device, name)
        assert second["devices"][device]["drawn"] == state["drawn"]


BIG = ("resnet18", "vgg_like")  # minutes each on 2 cores: in the full suite only
NETWORK_CASES = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in sorted(NETWORKS)]


@pytest.mark.parametrize("network", NETWORK_CASES)
def test_the_same_seed_trains_every_network_to_the_same_bits(data_dir, tmp_path_factory, network):
    if network in TEXT_NETWORKS:
        data_dir = tmp_path_factory.getbasetemp() / "plays"  # one parse for both text networks
    _assert_same(_run(data_dir, network, {}), _run(data_dir, network, {}))


def test_the_same_seed_gives_the_same_sampled_rounds_with_failures_and_local_steps(data_dir):
    rounds = {"devices_per_round": 2, "local_steps": 2, "failure_rate": 0.3, "client_optimizer": "sgd"}
    first, second = _run(data_dir, "lenet5", rounds), _run(data_dir, "lenet5", rounds)
    assert [step["sampled"] for step in first["ledger"]] == [2, 2]
    _assert_same(first, second)


def test_fit_py_deterministic_turns_on_the_deterministic_kernels(tmp_path):
    """On a GPU, --deterministic is what makes a run repeatable; Lightning sets it at the Trainer."""
    from scripts.fit import parse_args
    from scripts.fit_run import build_trainer

    args = parse_args(["--deterministic", "--wandb-mode", "disabled", "--output-dir", str(tmp_path)])
    args.accelerator, args.processes = "cpu", 1
    try:
        build_trainer(args, tmp_path, callbacks=[])
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    args.deterministic = False
    build_trainer(args, tmp_path, callbacks=[])
    assert not torch.are_deterministic_algorithms_enabled()
