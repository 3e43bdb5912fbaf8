"""FederatedStrategy: N devices hosted by 1, 2 or 4 processes train the same federation, counted exactly."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from modules.classifier import SparseVDClassifier

pytestmark = pytest.mark.slow  # runs fit.py or spawns processes: left out of the quick check

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "helpers" / "federated_run.py"
DEVICES = 4
STEPS_PER_EPOCH = 5  # 576 training images over 4 devices at batch 32: ceil(144 / 32)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def federated_run(data_dir: Path, out: Path, processes: int, *options: str) -> dict:
    environment = {**os.environ, "MASTER_PORT": str(_free_port())}
    command = [sys.executable, str(HELPER), str(data_dir), str(out), "--devices", str(DEVICES)]
    command += ["--processes", str(processes), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out / "result.pt", weights_only=False)


def without_transport(history: list[dict]) -> list[dict]:
    """The ledger's per-step counts of the federation's own messages (not what processes exchanged)."""
    return [{k: v for k, v in step.items() if k != "transport_bytes"} for step in history]


@pytest.fixture(scope="module")
def variant_runs(data_dir, tmp_path_factory) -> dict[int, dict]:
    """The paper's variant, 4 devices hosted by 1, 2 and 4 processes, payloads all-gathered."""
    out = tmp_path_factory.mktemp("variant")
    return {p: federated_run(data_dir, out / f"p{p}", p, "--transport", "sparse") for p in (1, 2, 4)}


def test_one_two_or_four_processes_give_the_same_ledger_and_the_same_weights(variant_runs):
    one = variant_runs[1]
    assert len(one["history"]) == 2 * STEPS_PER_EPOCH
    for processes in (2, 4):
        other = variant_runs[processes]
        assert without_transport(other["history"]) == without_transport(one["history"]), processes
        for name, value in one["state"].items():  # the same float sums in the same order: exact
            assert torch.equal(other["state"][name], value), (processes, name)
        for device in range(DEVICES):
            assert torch.equal(other["devices"][device]["params"]["network.1.log_sigma2"],
                               one["devices"][device]["params"]["network.1.log_sigma2"])  # fmt: skip
    assert one["total"]["transport_bytes"] == 0 < variant_runs[2]["total"]["transport_bytes"]


def test_the_logged_training_figures_are_the_round_s_mean_whatever_the_process_layout(variant_runs):
    """train/* is the mean over the round's devices (float64 sums of float32 figures that are the
    same bit for bit in every layout, added in another order): equal to float32 rounding."""
    one = variant_runs[1]["train_nll"]
    for processes in (2, 4):
        assert variant_runs[processes]["train_nll"] == pytest.approx(one, rel=1e-6), processes


def test_every_device_keeps_its_own_log_sigma2_and_the_model_is_device_zero_s(variant_runs):
    run = variant_runs[2]
    local = [run["devices"][d]["params"]["network.1.log_sigma2"] for d in range(DEVICES)]
    assert all(not torch.equal(local[0], other) for other in local[1:])
    assert torch.equal(run["state"]["network.1.log_sigma2"], local[0])


def test_the_ledger_counts_the_payloads_written_and_they_hold_the_masked_gradients(variant_runs):
    run = variant_runs[2]
    for step, traffic in enumerate(run["history"]):
        uploads = [run["payloads"][d][step] for d in range(DEVICES)]
        download = run["downloads"][step]
        assert traffic["upload_bytes"] == sum(length for length, _, _ in uploads)
        assert traffic["upload"] == sum(values for _, values, _ in uploads)
        assert traffic["download_bytes"] == DEVICES * download[0]
        assert traffic["download"] == DEVICES * download[1]
        for device in range(DEVICES):  # non-zero entries sent = recount from the raw gradient and M(alpha)
            assert run["payloads"][device][step][2] == run["uploads"][device][step], (step, device)
        assert traffic["dense_values"] == 2 * DEVICES * 266_610  # theta and biases of LeNet-300-100
    assert run["total"]["upload"] < run["total"]["dense_values"] / 2  # the masks left weights out


def test_a_robust_aggregate_over_processes_is_the_one_process_aggregate_bit_for_bit(data_dir, tmp_path):
    """The median of every update, attacker's included: the all-gather transport hands the server the
    same decoded updates in the same device order in every process layout."""
    options = ("--transport", "sparse", "--aggregator", "median", "--attack", "scale:-10",
               "--malicious-fraction", "0.25", "--max-epochs", "1")  # fmt: skip
    one = federated_run(data_dir, tmp_path / "one", 1, *options)
    two = federated_run(data_dir, tmp_path / "two", 2, *options)
    assert without_transport(two["history"]) == without_transport(one["history"])
    for name, value in one["state"].items():
        assert torch.equal(two["state"][name], value), name


@pytest.mark.parametrize("options", [("--dense",), ("--share-log-sigma2",)])
def test_the_dense_baseline_and_algorithm_1_are_the_same_in_one_process_as_in_four(
    data_dir, tmp_path, options
):
    one = federated_run(data_dir, tmp_path / "one", 1, "--transport", "sparse", *options)
    four = federated_run(data_dir, tmp_path / "four", 4, "--transport", "sparse", *options)
    assert without_transport(four["history"]) == without_transport(one["history"])
    for name, value in one["state"].items():
        assert torch.equal(four["state"][name], value), name
    if "--share-log-sigma2" in options:  # shared: every device ends with the same log_sigma2
        local = [one["devices"][d]["params"] for d in range(DEVICES)]
        assert local == [{}] * DEVICES


def test_the_all_reduce_transport_trains_the_model_of_the_all_gather_one(data_dir, tmp_path, variant_runs):
    reduced = federated_run(data_dir, tmp_path / "reduce", 2, "--transport", "dense")
    gathered = variant_runs[2]
    # The all-reduce sums in another order: float32 rounding (about 1e-7 relative) can move an entry
    # across a ReLU or mask boundary, so counts and weights agree but for a handful of entries.
    assert reduced["history"][0] == gathered["history"][0] | {
        "transport_bytes": reduced["history"][0]["transport_bytes"]
    }
    for ours, theirs in zip(reduced["history"], gathered["history"], strict=True):
        assert ours["upload"] == pytest.approx(theirs["upload"], rel=1e-3)
    for name, value in gathered["state"].items():
        apart = (reduced["state"][name] - value).abs() > 1e-5
        assert apart.float().mean() <= 1e-3, name
    assert reduced["total"]["transport_bytes"] != gathered["total"]["transport_bytes"]


@pytest.mark.parametrize("transport", ["dense", "sparse"])
def test_the_same_run_twice_under_two_processes_is_the_same_bit_for_bit(data_dir, tmp_path, transport):
    """Same seed, same processes, same transport: identical weights, device states and ledger."""
    first, second = (
        federated_run(data_dir, tmp_path / f"run{i}", 2, "--transport", transport, "--max-epochs", "1")
        for i in (0, 1)
    )
    assert first["history"] == second["history"]
    for name, value in first["state"].items():
        assert torch.equal(second["state"][name], value), name
    for device in range(DEVICES):
        for name, value in first["devices"][device]["params"].items():
            assert torch.equal(second["devices"][device]["params"][name], value), (device, name)


def test_a_resumed_run_ends_like_one_that_never_stopped_under_another_process_count(
    data_dir, tmp_path, variant_runs
):
    federated_run(data_dir, tmp_path / "first", 2, "--transport", "sparse", "--max-epochs", "1")
    checkpoint = tmp_path / "first" / "ckpt" / "last.ckpt"
    step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert checkpoint.with_name(f"last.ckpt.devices-1.step-{step}").exists()  # process 1's own devices
    whole = variant_runs[2]
    for processes in (2, 1):
        resumed = federated_run(
            data_dir,
            tmp_path / f"resumed{processes}",
            processes,
            "--transport",
            "sparse",
            "--resume",
            str(checkpoint),
        )
        assert without_transport(resumed["history"]) == without_transport(whole["history"])
        for name, value in whole["state"].items():
            assert torch.equal(resumed["state"][name], value), (processes, name)
        for device in range(DEVICES):
            for name, value in whole["devices"][device]["params"].items():
                assert torch.equal(resumed["devices"][device]["params"][name], value), (device, name)


def test_two_nodes_on_one_machine_train_as_the_one_process_federation(data_dir, tmp_path, variant_runs):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    env["LOCAL_RANK"] = "0"
    command = [sys.executable, str(HELPER), str(data_dir), str(tmp_path), "--devices", str(DEVICES)]
    command += ["--processes", "1", "--num-nodes", "2", "--transport", "sparse"]
    nodes = [
        subprocess.Popen(
            command, env={**env, "NODE_RANK": str(r)}, cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for r in range(2)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    result = torch.load(tmp_path / "result.pt", weights_only=False)
    assert without_transport(result["history"]) == without_transport(variant_runs[1]["history"])
    for name, value in variant_runs[1]["state"].items():
        assert torch.equal(result["state"][name], value), name


def test_a_user_comm_hook_is_refused_in_one_line():
    with pytest.raises(ValueError, match="takes no ddp_comm_hook; pass a codec"):
        FederatedStrategy(ddp_comm_hook=lambda state, bucket: None)
    with pytest.raises(ValueError, match="transport must be one of dense, sparse, got 'udp'"):
        FederatedStrategy(transport="udp")


def _trainer(strategy, **options) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_epochs=1, limit_train_batches=2,
        limit_val_batches=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, **options,
    )  # fmt: skip


def test_one_process_with_a_four_device_datamodule_is_a_four_device_federation_or_an_error(data_dir):
    def parts():
        dm = FederatedDataModule("mnist", DEVICES, batch_size=32, data_dir=data_dir, val_size=64)
        return dm, SparseVDClassifier("lenet300_100", num_train=576)

    for strategy in ("auto", "ddp"):
        dm, model = parts()
        with pytest.raises(ValueError, match="num_devices=4 but .* one device per process and has 1"):
            _trainer(strategy).fit(model, dm)
    dm, model = parts()
    trainer = _trainer("federated")
    trainer.fit(model, dm)
    assert trainer.strategy.hosted_devices == [0, 1, 2, 3]
    assert trainer.strategy.ledger.total.steps == 2
    assert trainer.strategy.ledger.total.dense_values == 2 * 2 * DEVICES * 266_610


def test_a_checkpoint_at_validation_end_holds_every_device_s_own_log_sigma2_and_batch_norm(
    data_dir, tmp_path
):
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 5),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(2304, 10),
    )
    model = SparseVDClassifier(network, num_train=576, lr=1e-2)
    dm = FederatedDataModule("mnist", DEVICES, batch_size=32, data_dir=data_dir, val_size=64)
    best = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val/acc", mode="max", save_top_k=1)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy="federated", max_epochs=1, limit_train_batches=4,
        val_check_interval=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[best],
    )  # fmt: skip
    trainer.fit(model, dm)
    checkpoint = torch.load(best.best_model_path, weights_only=False)
    devices = checkpoint["federated"]["devices"]
    assert sorted(devices) == list(range(DEVICES))
    for name in ("network.0.log_sigma2", "network.1.running_mean"):
        group = "params" if "log_sigma2" in name else "buffers"
        own = [devices[d][group][name] for d in range(DEVICES)]
        assert all(not torch.equal(own[0], other) for other in own[1:]), name
        assert torch.equal(checkpoint["state_dict"][name], own[0]), name  # the model saved is device 0's


def test_wrapper_options_and_bad_aggregations_are_refused_and_weighted_takes_the_shard_sizes(data_dir):
    with pytest.raises(
        ValueError, match="wraps no DistributedDataParallel, so find_unused_parameters does not"
    ):
        FederatedStrategy(find_unused_parameters=True)
    with pytest.raises(ValueError, match="aggregation must be one of mean, weighted, got 'median'"):
        FederatedStrategy(aggregation="median")
    dm = FederatedDataModule(
        "mnist",
        DEVICES,
        partition_params={"unequal_sigma": 0.5},
        batch_size=16,
        data_dir=data_dir,
        val_size=64,
    )
    trainer = _trainer(FederatedStrategy(aggregation="weighted"))
    trainer.fit(SparseVDClassifier("lenet300_100", num_train=576), dm)
    sizes = dm.device_sizes()
    assert len(set(sizes)) > 1 and trainer.strategy.weights == {d: float(n) for d, n in enumerate(sizes)}


def test_sampled_rounds_with_local_steps_are_the_same_under_one_two_or_four_processes(data_dir, tmp_path):
    """K = 2 of 4 devices, 3 local steps, a quarter failing: the schedule and the model do not
    depend on which process hosts which device, nor on how payloads cross processes."""
    options = (
        "--devices-per-round",
        "2",
        "--local-steps",
        "3",
        "--failure-rate",
        "0.25",
        "--max-epochs",
        "1",
    )
    runs = {
        (p, transport): federated_run(
            data_dir, tmp_path / f"p{p}{transport}", p, "--transport", transport, *options
        )
        for p, transport in ((1, "dense"), (2, "sparse"), (4, "sparse"), (2, "dense"))
    }
    reference = runs[(1, "dense")]
    assert reference["total"]["reported"] < reference["total"]["sampled"]
    for key, run in runs.items():
        assert without_transport(run["history"]) == without_transport(reference["history"]), key
        for name, value in reference["state"].items():
            tolerance = 0 if key[1] == "sparse" else 1e-6  # all-reduced sums add in another order
            assert torch.allclose(run["state"][name], value, atol=tolerance, rtol=0), (key, name)
