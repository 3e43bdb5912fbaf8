"""FederatedStrategy over real gloo processes: equivalence, exact counting, transports, log_sigma2, resume."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules import FederatedDataModule
from lightning_fed.communication import Traffic
from modules.classifier import SparseVDClassifier
from modules.networks import build_network
from tests.helpers.fake_data import write_mnist

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "helpers" / "federated_run.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def federated_run(
    data_dir: Path, out: Path, devices: int, *options: str, env: dict | None = None
) -> list[dict]:
    environment = {**os.environ, "MASTER_PORT": str(_free_port()), **(env or {})}
    command = [sys.executable, str(HELPER), str(data_dir), str(out), str(devices), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(devices)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=640, n_test=64)
    return root


def test_dense_federated_run_equals_single_process_on_the_union_of_batches(data_dir, tmp_path):
    ranks = federated_run(data_dir, tmp_path, 2, "--dense", "--max-epochs", "1")
    pl.seed_everything(0, verbose=False)
    dm = FederatedDataModule("mnist", 2, batch_size=32, data_dir=data_dir, val_size=0)
    dm.setup("fit")
    model = SparseVDClassifier(build_network("lenet300_100", 1, 28, 10), num_train=640, dense=True, lr=1e-2)
    optimizer = model.configure_optimizers()
    for batches in zip(dm.device_dataloader(0), dm.device_dataloader(1), strict=True):
        optimizer.zero_grad()
        losses = [model.elbo_terms(model(x), y)["loss"] for x, y in batches]
        (sum(losses) / len(losses)).backward()
        optimizer.step()
    for name, value in model.state_dict().items():
        assert torch.allclose(ranks[0]["state"][name], value, atol=1e-5), name


def test_ledger_counts_equal_independent_recount_step_by_step(data_dir, tmp_path):
    ranks = federated_run(data_dir, tmp_path, 2, "--transport", "sparse")
    history = ranks[0]["history"]
    assert len(history) == len(ranks[0]["uploads"]) == 20  # 2 epochs x 10 steps
    for step, traffic in enumerate(history):
        assert traffic["upload"] == sum(rank["uploads"][step] for rank in ranks)
        assert traffic["download"] == 2 * ranks[0]["downloads"][step]
    assert ranks[0]["history"] == ranks[1]["history"]  # every device keeps the global ledger
    params = sum(v.numel() for k, v in ranks[0]["state"].items() if not k.endswith("log_sigma2"))
    assert history[0]["dense_values"] == 2 * 2 * params
    assert Traffic.from_dict(ranks[0]["total"]).paper_fraction < 1.0


def test_sparse_and_dense_transports_end_in_the_same_weights(data_dir, tmp_path):
    sparse = federated_run(data_dir, tmp_path / "sparse", 2, "--transport", "sparse")
    dense = federated_run(data_dir, tmp_path / "dense", 2, "--transport", "dense")
    for name, value in sparse[0]["state"].items():
        assert torch.allclose(value, dense[0]["state"][name], atol=1e-5), name
    assert [t["upload"] for t in sparse[0]["history"]] == [t["upload"] for t in dense[0]["history"]]


def test_log_sigma2_is_local_in_the_variant_and_shared_in_algorithm_1(data_dir, tmp_path):
    variant = federated_run(data_dir, tmp_path / "variant", 2)
    shared = federated_run(data_dir, tmp_path / "shared", 2, "--share-log-sigma2")
    key = "network.1.log_sigma2"
    assert not torch.equal(variant[0]["state"][key], variant[1]["state"][key])
    assert torch.equal(variant[0]["state"]["network.1.weight"], variant[1]["state"]["network.1.weight"])
    assert torch.equal(shared[0]["state"][key], shared[1]["state"][key])
    assert Traffic.from_dict(shared[0]["total"]).upload > Traffic.from_dict(variant[0]["total"]).upload


def test_a_stopped_and_resumed_run_ends_like_one_that_never_stopped(data_dir, tmp_path):
    whole = federated_run(data_dir, tmp_path / "whole", 2, "--max-epochs", "2")
    federated_run(data_dir, tmp_path / "first", 2, "--max-epochs", "1")
    checkpoint = tmp_path / "first" / "ckpt" / "last.ckpt"
    resumed = federated_run(
        data_dir, tmp_path / "resumed", 2, "--max-epochs", "2", "--resume", str(checkpoint)
    )
    assert resumed[0]["history"] == whole[0]["history"] and resumed[0]["total"]["steps"] == 20
    key = "network.1.log_sigma2"
    assert not torch.equal(whole[0]["state"][key], whole[1]["state"][key])  # devices differ ...
    for rank in range(2):  # ... and each one continues from its own log_sigma2, not rank 0's
        for name, value in whole[rank]["state"].items():
            assert torch.equal(resumed[rank]["state"][name], value), (rank, name)


def test_two_nodes_on_one_machine_train_as_one_federation(data_dir, tmp_path):
    port = str(_free_port())
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
    }
    command = [sys.executable, str(HELPER), str(data_dir), str(tmp_path), "1", "--num-nodes", "2"]
    nodes = [
        subprocess.Popen(
            command, env={**env, "NODE_RANK": str(r)}, cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for r in range(2)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["state"]["network.1.weight"], ranks[1]["state"]["network.1.weight"])
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 20
