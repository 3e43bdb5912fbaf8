"""fit.py started by a cluster launcher (torchrun, SLURM's srun) as two nodes on this machine: the same
ledger and weights as one process; each node says which it is; shapes that disagree are one line."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_fed.runs.cluster import check_launched_shape, cluster_launcher, launched_shape, node_line
from lightning_fed.runs.hardware import is_launcher

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--dataset", "mnist-5k", "--val-size", "500", "--devices", "2", "--network", "lenet300_100",
    "--limit-train-batches", "3", "--max-epochs", "1", "--wandb-mode", "disabled", "--transport", "sparse",
]  # fmt: skip
TORCHRUN = {"TORCHELASTIC_RUN_ID": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}
SLURM = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "fit"}


# ------------------------------------------------------------------------------------- quick
@pytest.mark.parametrize(
    ("environ", "launcher", "shape"),
    [(TORCHRUN, "torchrun", (2, 2)), (SLURM, "slurm", (2, 2)), ({"LOCAL_RANK": "1"}, None, None)],
)
def test_the_launcher_and_the_shape_it_started_are_read_from_its_variables(environ, launcher, shape):
    assert cluster_launcher(environ) == launcher and launched_shape(environ) == shape


@pytest.mark.parametrize("environ", [TORCHRUN, SLURM])
def test_processes_and_nodes_that_disagree_with_the_launcher_are_one_line_errors(environ):
    assert check_launched_shape(None, 2, environ) == 2 and check_launched_shape(2, 2, environ) == 2
    with pytest.raises(ValueError, match=r"^processes=3, but .* started 2 a node \(--n\w+-per-node 2\)"):
        check_launched_shape(3, 2, environ)
    with pytest.raises(
        ValueError, match=r"^num_nodes=1, but .* started 2 nodes \(--n\w+ 2\); give num_nodes=2$"
    ):
        check_launched_shape(None, 1, environ)


def test_under_a_cluster_launcher_global_rank_0_writes_the_run_folder(monkeypatch):
    for name in ("LOCAL_RANK", "NODE_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**TORCHRUN, "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    assert is_launcher()  # LOCAL_RANK is set, as torchrun sets it for every process
    monkeypatch.setenv("RANK", "2")
    assert not is_launcher()
    environ = {**SLURM, "SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}
    assert node_line("/runs/a", environ=environ) == (
        "fit.py: node 1 of 2 (slurm, processes 2-3): device files only, under /runs/a on this machine"
    )
    assert node_line("/runs/a", environ={**environ, "SLURM_LOCALID": "1"}) is None  # a node's first says it
    assert node_line("/runs/a", 1, 2, {"NODE_RANK": "1"}) == (  # by hand: fit.py's flags
        "fit.py: node 1 of 2 (fit.py, processes 1-1): device files only, under /runs/a on this machine"
    )
    assert node_line("/runs/a", 1, 1, {}) is None and node_line("/runs/a", 1, 2, {"LOCAL_RANK": "1"}) is None


def test_fit_py_names_its_flags_when_they_disagree_with_torchrun(monkeypatch, capsys):
    from scripts.fit import parse_args

    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        parse_args([*ARGS, "--num-nodes", "2", "--processes", "1", "--output-dir", "unused"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fit.py: error: --processes 1, but torchrun started 2 a node (--nproc-per-node 2); "
        "give --processes 2 or leave it out"
    )


# -------------------------------------------------------------------------------------- slow
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_environment() -> dict:
    names = (
        "LOCAL_RANK",
        "NODE_RANK",
        "RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
    )
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith("SLURM_")}


def _weights(folder: Path) -> dict:
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]


def _ledger(folder: Path) -> list[dict]:
    history = json.loads((folder / "ledger.json").read_text())["history"]
    return [{k: v for k, v in step.items() if k != "transport_bytes"} for step in history]


def _assert_trained_alike(folder: Path, one_process: Path) -> None:
    """The same ledger (every step, transport bytes aside) and bit-identical weights as one process."""
    assert _ledger(folder) == _ledger(one_process)
    theirs = _weights(folder)
    for name, value in _weights(one_process).items():
        assert torch.equal(theirs[name], value), name


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("one") / "run"
    command = [sys.executable, "scripts/fit.py", *ARGS, "--output-dir", str(folder)]
    result = subprocess.run(
        command, cwd=ROOT, env=_clean_environment(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def _two_nodes(commands: list[list[str]], environments: list[dict]) -> list[str]:
    nodes = [
        subprocess.Popen(c, cwd=ROOT, env=e, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for c, e in zip(commands, environments, strict=True)
    ]
    errors = []
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
        errors.append(err)
    return errors


@pytest.mark.slow
def test_torchrun_on_two_nodes_trains_as_the_one_process_run(one_process, tmp_path):
    """README's torchrun command, as two nodes on localhost."""
    folder, port = tmp_path / "run", str(_free_port())
    commands = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", port,
         "scripts/fit.py", *ARGS, "--num-nodes", "2", "--output-dir", str(folder)]
        for rank in range(2)
    ]  # fmt: skip
    errors = _two_nodes(commands, [_clean_environment()] * 2)
    assert f"fit.py: node 0 of 2 (torchrun, processes 0-0): the run folder {folder}" in errors[0]
    assert f"fit.py: node 1 of 2 (torchrun, processes 1-1): device files only, under {folder}" in errors[1]
    assert json.loads((folder / "summary.json").read_text())["processes"] == 2
    _assert_trained_alike(folder, one_process)


@pytest.mark.slow
def test_srun_s_variables_on_two_nodes_train_as_the_one_process_run(one_process, tmp_path):
    """What ``srun`` sets for each task of ``sbatch --nodes 2 --ntasks-per-node 1``, set by hand."""
    folder, port = tmp_path / "run", str(_free_port())
    command = [sys.executable, "scripts/fit.py", *ARGS, "--num-nodes", "2", "--output-dir", str(folder)]
    environments = [
        {**_clean_environment(), "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2",
         "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank), "SLURM_JOB_ID": "4242",
         "SLURM_JOB_NAME": "fit", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": port}
        for rank in range(2)
    ]  # fmt: skip
    errors = _two_nodes([command, command], environments)
    assert f"fit.py: node 1 of 2 (slurm, processes 1-1): device files only, under {folder}" in errors[1]
    _assert_trained_alike(folder, one_process)


@pytest.mark.slow
def test_two_nodes_started_by_hand_train_as_the_one_process_run(one_process, tmp_path):
    """README's by-hand command: fit.py on each node with MASTER_ADDR, MASTER_PORT, WORLD_SIZE, NODE_RANK."""
    folder, port = tmp_path / "run", str(_free_port())
    command = [sys.executable, "scripts/fit.py", *ARGS, "--num-nodes", "2", "--processes", "1"]
    command += ["--output-dir", str(folder)]
    base = {**_clean_environment(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2"}
    errors = _two_nodes([command, command], [{**base, "NODE_RANK": str(rank)} for rank in range(2)])
    assert f"fit.py: node 0 of 2 (fit.py, processes 0-0): the run folder {folder}" in errors[0]
    assert f"fit.py: node 1 of 2 (fit.py, processes 1-1): device files only, under {folder}" in errors[1]
    _assert_trained_alike(folder, one_process)


# -------------------------------------------------------------------------- faults across nodes
def _by_hand(folder: Path, *extra: str) -> tuple[list[str], dict]:
    command = [sys.executable, "scripts/fit.py", *ARGS, "--num-nodes", "2", "--processes", "1"]
    base = {**_clean_environment(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    return [*command, "--output-dir", str(folder), *extra], {**base, "WORLD_SIZE": "2"}


@pytest.mark.slow
def test_a_node_that_never_joins_is_named_by_node_0_within_the_node_timeout(tmp_path):
    command, environment = _by_hand(tmp_path / "run", "--node-timeout", "5")
    result = subprocess.run(
        command, cwd=ROOT, env={**environment, "NODE_RANK": "0"}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "lightning-fed: node 1 did not join within 5 s (--node-timeout; processes 1 missing): no node trained"
    )


@pytest.mark.slow
def test_a_killed_node_is_named_by_the_other_within_the_node_timeout_and_both_resume_exactly(tmp_path):
    """Node 1 is killed (-9) once a checkpoint is written; node 0 stops with one line naming it. Both
    started again with --resume then train as one process that never stopped: same ledger, same
    weights."""
    folder = tmp_path / "run"
    command, environment = _by_hand(folder, "--node-timeout", "8", "--max-epochs", "200")
    nodes = [
        subprocess.Popen(command, cwd=ROOT, env={**environment, "NODE_RANK": str(rank)},
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for rank in range(2)
    ]  # fmt: skip
    deadline = time.monotonic() + 300
    while not (folder / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    nodes[1].kill()
    _, err = nodes[0].communicate(timeout=120)  # the bound: 8 s of silence, plus this machine's load
    nodes[1].communicate()
    assert nodes[0].returncode == 1
    assert err.strip().splitlines()[-1] == (
        "lightning-fed: node 1 stopped answering (no heartbeat for 8 s, --node-timeout); stopping node 0 "
        "(the last checkpoint is whole: start every node again with --resume)"
    )
    epochs = (
        2 + torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"]
    )
    command, environment = _by_hand(folder, "--max-epochs", str(epochs), "--resume")
    _two_nodes([command, command], [{**environment, "NODE_RANK": str(rank)} for rank in range(2)])
    straight = tmp_path / "straight"  # the same epochs in one process, never stopped
    command = [
        sys.executable,
        "scripts/fit.py",
        *ARGS,
        "--max-epochs",
        str(epochs),
        "--output-dir",
        str(straight),
    ]
    subprocess.run(command, cwd=ROOT, env=_clean_environment(), check=True, capture_output=True, timeout=600)
    _assert_trained_alike(folder, straight)
