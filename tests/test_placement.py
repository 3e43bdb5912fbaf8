"""Placement: a round's devices dealt across processes in balance, or trained where they are hosted."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_fed import FederatedStrategy
from lightning_fed.federation.checkpoint import CHECKPOINT_KEY
from lightning_fed.federation.config import FederationConfig
from lightning_fed.federation.host import RoundHost
from lightning_fed.federation.placement import balance_blocker, deal, resolve_placement, row_names_of
from lightning_fed.federation.watchdog import ProcessWatching, named_devices
from lightning_fed.nn.init_from import read_checkpoint
from tests.helpers import pinned

ROOT = Path(__file__).resolve().parents[1]


def _check_dealt(dealt: list[list[int]], devices: list[int], work: dict[int, int]) -> list[int]:
    """Every device once, each process's list in device order; the processes' loads."""
    assert sorted(d for part in dealt for d in part) == sorted(devices)
    assert all(part == sorted(part) for part in dealt)
    return [sum(work[d] for d in part) for part in dealt]


@pytest.mark.parametrize("processes", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [1, 5, 12, 50])
def test_equal_work_is_dealt_so_that_process_counts_differ_by_at_most_one(count, processes):
    devices = list(range(7, 7 + 13 * count, 13))
    dealt = deal(devices, dict.fromkeys(devices, 4), processes)
    loads = _check_dealt(dealt, devices, dict.fromkeys(devices, 4))
    assert len(dealt) == processes and max(loads) - min(loads) <= 4


def test_unequal_work_is_dealt_longest_first_to_the_least_loaded_process_whatever_the_order_given():
    work = {d: 1 + (d * 7) % 10 for d in range(30)}  # 1 to 10 steps
    devices = list(range(30))
    dealt = deal(devices, work, 3)
    loads = _check_dealt(dealt, devices, work)
    assert max(loads) - min(loads) <= max(work.values())  # what longest-first guarantees
    assert deal(devices[::-1], work, 3) == dealt  # every process computes the same deal
    assert deal([5, 6, 7], {5: 9, 6: 1, 7: 1}, 2) == [[5], [6, 7]]


def _strategy(config: FederationConfig, placement="auto", world_size=2, local=False, rows=(), **algorithm):
    """What :func:`resolve_placement` reads of a strategy."""
    return SimpleNamespace(
        config=config, placement=placement, world_size=world_size,
        synchronous=config.synchronous(8), plan=SimpleNamespace(local_parameters=["w"] if local else []),
        compression=SimpleNamespace(feedback_kinds=tuple(rows)),
        algorithm=SimpleNamespace(device_row_names=(), local_step_count=lambda source, d: 1, **algorithm),
    )  # fmt: skip


SAMPLED = {"num_devices": 8, "devices_per_round": 4}


def test_auto_deals_sampled_rounds_across_several_processes_and_nothing_else():
    assert resolve_placement(_strategy(FederationConfig(**SAMPLED))) == "balanced"
    assert resolve_placement(_strategy(FederationConfig(**SAMPLED), world_size=1)) == "hosted"
    assert resolve_placement(_strategy(FederationConfig(num_devices=8))) == "hosted"  # the paper's
    assert resolve_placement(_strategy(FederationConfig(**SAMPLED), "hosted")) == "hosted"
    assert resolve_placement(_strategy(FederationConfig(num_devices=8), "balanced")) == "balanced"


@pytest.mark.parametrize(
    "options, local, rows, reason",
    [
        ({}, True, (), "needs devices without local parameters"),
        ({}, False, ("residual",), r"needs devices without model-sized state of their own \(residual\)"),
        ({"attack": "sign_flip", "malicious_fraction": 0.2}, False, (), "does not go with attack='sign_flip"),
        ({"secure_aggregation": True}, False, (), "does not go with secure_aggregation=True"),
        ({"dp_clip": 1.0, "dp_noise_multiplier": 1.0}, False, (), "does not go with dp_clip=1.0"),
    ],
)
def test_balanced_is_refused_in_one_line_where_a_device_is_tied_to_its_process(options, local, rows, reason):
    config = FederationConfig(**SAMPLED, **options)
    with pytest.raises(ValueError, match=rf"^placement='balanced' {reason}.*; use placement='hosted'$"):
        resolve_placement(_strategy(config, "balanced", local=local, rows=rows))
    assert resolve_placement(_strategy(config, "auto", local=local, rows=rows)) == "hosted"


def test_the_state_each_device_keeps_is_read_from_the_options():
    assert row_names_of(FederationConfig(**SAMPLED), 8) == ()
    feedback = FederationConfig(**SAMPLED, codec="topk:0.1", error_feedback=True)
    assert row_names_of(feedback, 8) == ("residual",)
    assert row_names_of(FederationConfig(**SAMPLED, download="delta"), 8) == ("download:held",)
    assert row_names_of(FederationConfig(num_devices=8, download="delta"), 8) == ()  # one message for all
    algorithm = SimpleNamespace()  # no local steps to deal by
    assert "needs an algorithm" in balance_blocker(FederationConfig(**SAMPLED), False, (), algorithm)


class _Host(RoundHost, ProcessWatching):
    """The host's and the watchdog's sides of a strategy of 8 devices in two processes."""

    world_size, global_rank, num_devices = 2, 1, 8
    algorithm = SimpleNamespace(local_step_count=lambda source, device: 2)
    lightning_module = SimpleNamespace(trainer=SimpleNamespace(global_step=7))

    def _resolve_num_devices(self):
        return self.num_devices


def test_a_lost_process_is_named_by_the_devices_it_was_training_under_each_placement():
    host = _Host()
    assert [host._describe_rank(rank) for rank in (0, 1)] == ["devices 0-3", "devices 4-7"]
    host.placement_of_run = "balanced"
    assert host._describe_rank(1) == "no round's devices dealt yet"
    mine = host.devices_of_round(SimpleNamespace(reporting=[6, 1, 7, 0, 3]))
    assert host.dealt == (7, deal([6, 1, 7, 0, 3], dict.fromkeys([6, 1, 7, 0, 3], 2), 2))
    assert mine == host.dealt[1][1] and sorted(host.dealt[1][0] + mine) == [0, 1, 3, 6, 7]
    assert host._describe_rank(0) == f"{named_devices(host.dealt[1][0])} of step 7's deal"
    assert host._describe_rank(1) == f"{named_devices(mine)} of step 7's deal"  # not its block, 4-7


def test_an_unknown_placement_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"^placement must be one of auto, hosted, balanced, got 'even'$"):
        FederatedStrategy(placement="even")


@pytest.mark.parametrize(
    "options, reason",
    [
        ([], "needs devices without local parameters"),
        (["--dense", "--codec", "topk:0.1", "--error-feedback"], "needs devices without model-sized state"),
        (["--dense", "--worker-momentum", "0.9"], "needs devices without model-sized state of their own (m"),
    ],
)  # fmt: skip
def test_fit_refuses_a_balanced_placement_in_one_line_writing_nothing(options, reason, tmp_path, capsys):
    from scripts.fit import parse_args

    folder = tmp_path / "run"
    argv = ["--dataset", "mnist", "--devices", "16", "--devices-per-round", "4", "--placement", "balanced"]
    with pytest.raises(SystemExit) as stop:
        parse_args([*argv, *options, "--output-dir", str(folder)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and not folder.exists()
    assert last.startswith(f"fit.py: error: --placement balanced {reason}")
    assert last.endswith("; use --placement hosted")


# Algorithm 1's devices draw their weight noise from their own random streams: a stream that did not
# travel with its device would change the model.
ALGORITHM1 = {"share_log_sigma2": True, "devices_per_round": 3, "local_steps": 2, "transport": "sparse"}
MODULE = {**pinned.PRUNING, "mask_log_sigma2": True}


def _without_transport_bytes(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in step.items() if k != "transport_bytes"} for step in history]


@pytest.mark.slow
def test_two_processes_dealt_in_balance_train_the_one_process_model_bit_for_bit(data_dir, tmp_path):
    runs = {
        name: pinned.run_apart(name, data_dir, tmp_path / f"{name}.json", config)
        for name, config in {
            "one": (ALGORITHM1, 1, MODULE),
            "hosted": ({**ALGORITHM1, "placement": "hosted"}, 2, MODULE),
            "balanced": ({**ALGORITHM1, "placement": "auto"}, 2, MODULE),
        }.items()
    }
    one, hosted, balanced = runs["one"], runs["hosted"], runs["balanced"]
    assert balanced["model"] == hosted["model"] == one["model"]
    assert balanced["devices"] == hosted["devices"] == one["devices"]
    assert _without_transport_bytes(balanced["history"]) == _without_transport_bytes(one["history"])
    blocks = pinned.DEVICES // 2
    by_round = list(zip(*balanced["dealt"], strict=True))  # per round: what each process trained
    assert len(by_round) == pinned.STEPS
    assert all(abs(len(first) - len(second)) <= 1 for first, second in by_round)
    assert any(d >= blocks for first, _ in by_round for d in first)  # devices did move
    assert all(d < blocks for d in sum(hosted["dealt"][0], []))  # hosted: each process its own block
    assert all(d >= blocks for d in sum(hosted["dealt"][1], []))


def _fit(folder: Path, *extra: str) -> None:
    command = [
        sys.executable, str(ROOT / "scripts" / "fit.py"), "--dataset", "mnist-5k", "--val-size", "500",
        "--devices", "8", "--devices-per-round", "3", "--local-steps", "2", "--network", "lenet300_100",
        "--share-log-sigma2", "--processes", "2", "--transport", "sparse", "--max-epochs", "2",
        "--limit-val-batches", "0", "--checkpoint-every-n-steps", "1", "--wandb-mode", "disabled",
        "--output-dir", str(folder), *extra,
    ]  # fmt: skip
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=folder.parent, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_a_balanced_run_stopped_and_resumed_ends_as_the_run_that_never_stopped(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    _fit(straight, "--max-rounds", "6")
    _fit(stopped, "--max-rounds", "3")
    _fit(stopped, "--max-rounds", "6", "--resume")
    ours, theirs = (read_checkpoint(folder / "checkpoints" / "last.ckpt") for folder in (stopped, straight))
    assert ours["global_step"] == theirs["global_step"] == 6
    for name, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], value), name
    for device, state in theirs[CHECKPOINT_KEY]["devices"].items():  # process 0's: devices 0-3
        assert ours[CHECKPOINT_KEY]["devices"][device]["drawn"] == state["drawn"], device
    ledgers = [json.loads((folder / "ledger.json").read_text()) for folder in (stopped, straight)]
    assert ledgers[0] == ledgers[1]
