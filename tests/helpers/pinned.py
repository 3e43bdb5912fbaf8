"""Pinned runs: what each of a set of federations sends and ends with, recorded before a redesign.

A redesign of the federation changes no result it does not mean to. Each configuration below
trains four devices for a few rounds on the fake MNIST of ``tests/conftest.py`` and is reduced
to a fingerprint: the ledger's per-step history (every count the ledger keeps) and a SHA-256 of
the final model and of every device's own state (local parameters, buffers, drawn batches,
error-feedback residuals). ``tests/data/pinned.json`` holds the fingerprints recorded by the
code before the redesign; ``tests/test_pinned.py`` compares today's code with them.

Regenerate (only when a change of results is meant, with the reason in the commit)::

    python -m tests.helpers.pinned --write

Run one configuration as its own process group (what the test does for ``processes`` > 1)::

    python -m tests.helpers.pinned --run NAME --data-dir DIR --out FILE
"""

import argparse
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PINNED = ROOT / "tests" / "data" / "pinned.json"
DEVICES, BATCH, STEPS = 4, 8, 4

PRUNING = {"init_log_sigma2": -6.0}  # about a quarter of the weights start above the threshold
SAMPLED = {"devices_per_round": 2, "local_steps": 2, "failure_rate": 0.3, "client_optimizer": "sgd"}
# name: (FederatedStrategy's options, processes[, SparseVDClassifier's options other than PRUNING])
CONFIGS: dict[str, tuple] = {
    "variant": ({}, 1),
    "algorithm1": ({"share_log_sigma2": True}, 1, {**PRUNING, "mask_log_sigma2": True}),
    "dense-baseline": ({}, 1, {"dense": True}),
    "unmasked-sampled": ({"mask": False, "devices_per_round": 2, "local_steps": 2}, 1),
    "sampled-failures": ({**SAMPLED, "server_optimizer": "fedadam"}, 1),
    "weighted-mean": ({"aggregation": "weighted", "devices_per_round": 3, "local_steps": 2}, 1),
    "codec-feedback-both-ways": (
        {"codec": "topk:0.1+qsgd:8", "error_feedback": True, "download_error_feedback": True},
        1,
    ),
    "download-delta": (
        {"local_steps": 2, "download": "delta", "download_codec": "qsgd:8", "download_error_feedback": True},
        1,
    ),
    "dgc": (
        {
            "codec": "topk:0.05",
            "error_feedback": True,
            "error_feedback_momentum": 0.9,
            "server_optimizer": "fedavg",
            "local_steps": 1,
            "devices_per_round": 4,
        },
        1,
    ),  # fmt: skip
    "fedprox-sgd": ({"local_steps": 3, "proximal_mu": 0.1, "client_optimizer": "sgd", "client_lr": 0.05}, 1),
    "processes2-dense": ({"transport": "dense"}, 2),
    "processes2-sparse": ({"transport": "sparse", "codec": "topk:0.1", "error_feedback": True}, 2),
    "processes2-sampled": ({**SAMPLED, "transport": "sparse"}, 2),
}


def digest(tensors) -> str:
    """SHA-256 of ``(name, tensor)`` pairs, in the order given: names, dtypes, shapes and bytes."""
    sha = hashlib.sha256()
    for name, tensor in tensors:
        shape = tuple(tensor.shape)
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        sha.update(f"{name}|{tensor.dtype}|{shape}|".encode())
        sha.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return sha.hexdigest()


def _tensors(prefix: str, value):
    """Every tensor inside nested dicts and lists, named by its path (dict keys sorted)."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _tensors(f"{prefix}.{key}", value[key])
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(f"{prefix}.{i}", item)


def fingerprint(module, strategy) -> dict:
    """The ledger's history, the model's hash and the devices' states' hash, with float sums for
    comparing across CPUs whose kernels round differently."""
    states = strategy.devices.state_dict()
    devices = []
    for device in sorted(states):
        state = states[device]
        devices += [(f"{device}.params.{k}", v) for k, v in sorted(state["params"].items())]
        devices += [(f"{device}.buffers.{k}", v) for k, v in sorted(state["buffers"].items())]
        devices += list(_tensors(f"{device}.residuals", state.get("stages", {})))
        devices.append((f"{device}.drawn", torch.tensor(state["drawn"])))
    model = sorted(module.state_dict().items())
    return {
        "history": [{k: v for k, v in vars(t).items()} for t in strategy.ledger.history],
        "model": digest(model),
        "devices": digest(devices),
        "model_sums": {k: float(v.double().sum()) for k, v in model if v.is_floating_point()},
    }


def run(name: str, data_dir: Path, root: Path, config: tuple | None = None) -> dict:
    """Train configuration ``name`` (or ``config``, a tuple as in :data:`CONFIGS`) in this process
    (as one of its processes, when it has several). With several, ``dealt`` is what each process
    trained in each round."""
    import pytorch_lightning as pl

    from datamodules import FederatedDataModule
    from lightning_fed import FederatedStrategy
    from modules.classifier import SparseVDClassifier

    options, processes, module_options = (*(config or CONFIGS[name]), PRUNING)[:3]
    torch.set_num_threads(1)  # the same float reductions whatever the machine's core count
    pl.seed_everything(7, verbose=False)
    dm = FederatedDataModule("mnist", DEVICES, batch_size=BATCH, data_dir=data_dir, val_size=64)
    module = SparseVDClassifier("lenet300_100", num_train=576, **module_options)
    strategy = FederatedStrategy(**options)
    trainer = pl.Trainer(
        accelerator="cpu", devices=processes, strategy=strategy, max_steps=STEPS, logger=False,
        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=root,
    )  # fmt: skip
    dealt, devices_of_round = [], strategy.devices_of_round
    strategy.devices_of_round = lambda *args: dealt.append(devices_of_round(*args)) or dealt[-1]
    trainer.fit(module, dm)
    if processes == 1:
        return fingerprint(module, strategy)
    parts = [None] * trainer.world_size  # every process's devices, gathered on process 0
    torch.distributed.all_gather_object(parts, (strategy.devices.state_dict(), dealt))
    strategy.devices.state_dict = lambda: {d: s for part, _ in parts for d, s in part.items()}
    result = {**fingerprint(module, strategy), "dealt": [trained for _, trained in parts]}
    return result if trainer.is_global_zero else {}


def run_apart(name: str, data_dir: Path, out: Path, config: tuple | None = None) -> dict:
    """Configuration ``name`` (or ``config``) in a fresh Python process, which launches its own
    device processes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # one thread from the interpreter's start: the float kernels BLAS picks depend on it
    environment = {**os.environ, "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for variable in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "MASTER_ADDR"):
        environment.pop(variable, None)  # a fresh launcher, whatever this process ran before
    command = [sys.executable, "-m", "tests.helpers.pinned", "--run", name]
    command += ["--data-dir", str(data_dir), "--out", str(out)]
    command += ["--config", json.dumps(config)] if config is not None else []
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def machine() -> dict:
    """What decides float rounding: torch's version, the CPU kernels it picked, and the instruction
    set extensions its math libraries (oneDNN, MKL) choose their kernels by: two AVX512 machines of
    different generations round the same run differently in the last bits."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
    }


def cpu_flags() -> str:
    """The CPU's vector extensions (``avx*``, ``amx*``, ``fma``, ``f16c``), sorted, from
    ``/proc/cpuinfo``; the processor's name where that cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return " ".join(sorted(f for f in set(flags) if f.startswith(("avx", "amx", "fma", "f16c"))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"record every configuration in {PINNED}")
    names = ", ".join(sorted(CONFIGS))
    parser.add_argument("--run", help=f"run one configuration: {names}, or any name with --config")
    parser.add_argument("--config", type=json.loads, help="as JSON: [strategy, processes, module]")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.run:
        if args.config is None and args.run not in CONFIGS:
            parser.error(f"--run {args.run!r} is not a pinned configuration; give its --config")
        result = run(args.run, args.data_dir, args.out.parent, args.config)
        if result:
            args.out.write_text(json.dumps(result))
        return
    if not args.write:
        parser.error("give --write or --run NAME")
    from tests.helpers.fake_data import write_mnist

    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "mnist"
        write_mnist(data_dir, n_train=640, n_test=64)
        runs = {name: run_apart(name, data_dir, Path(folder) / f"{name}.json") for name in CONFIGS}
    PINNED.parent.mkdir(exist_ok=True)
    PINNED.write_text(json.dumps({"machine": machine(), "runs": runs}, indent=1) + "\n")
    print(f"wrote {PINNED} ({len(runs)} configurations)")


if __name__ == "__main__":
    main()
