"""What every engine of ``benchmark_simulation.py`` shares: the clients' data, the network, the clock.

Imports only torch and numpy, so that the peers' own environments (Flower, pfl-research) can
run it: the network is read from ``modules/networks.py`` by path (with the project's torch-only
modules it imports, ``lightning_fed.nn`` and ``modules.catalog``, found through the repository).
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def arguments(device: bool = False) -> argparse.Namespace:
    """The engines' options; ``device``: also ``--device`` (cpu, cuda), ``--threads`` (set here) and
    ``--processes``, for the engines whose layout the benchmark chooses (``ours.py``, ``plain.py``,
    ``batched.py``; only ours hosts its clients in several processes)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("data", help="clients.pt written by benchmark_simulation.py")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    if device:
        parser.add_argument("--device", default="cpu", help="where the clients train: cpu, cuda, cuda:1")
        parser.add_argument("--threads", type=int, default=None, help="torch's threads (default: its own)")
        parser.add_argument("--processes", type=int, default=1, help="processes hosting the clients (ours)")
    args = parser.parse_args()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return args


def load_clients(path) -> dict:
    """``images`` (normalised float32, N x 1 x 28 x 28), ``labels`` and ``shards`` (index arrays)."""
    data = torch.load(path, weights_only=True)
    mean, std = float(data["mean"]), float(data["std"])
    images = (data["images"].float() / 255.0 - mean) / std
    return {"images": images, "labels": data["labels"], "shards": [s.numpy() for s in data["shards"]]}


_NETWORKS = []  # modules/networks.py, read once per process


def network() -> torch.nn.Module:
    """CifarNet for 28 x 28 grey images, as ``modules.networks`` builds it."""
    if not _NETWORKS:
        if str(ROOT) not in sys.path:  # networks.py imports the project's torch-only modules (its LSTM)
            sys.path.insert(0, str(ROOT))
        spec = importlib.util.spec_from_file_location("networks", ROOT / "modules" / "networks.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _NETWORKS.append(module)
    return _NETWORKS[0].cifarnet(1, 28, 10)


def local_epoch(model, optimizer, images, labels, shard, batch_size: int, rng) -> None:
    """One pass of SGD over a client's shard in a shuffled order; the last batch may be short."""
    order = rng.permutation(shard)
    for start in range(0, len(order), batch_size):
        index = torch.from_numpy(order[start : start + batch_size])
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images[index]), labels[index]).backward()
        optimizer.step()


def timed_rounds(args: argparse.Namespace, fedavg_round) -> None:
    """The FedAvg schedule of the plain engines, each round timed; prints the ``ROUNDS`` line.

    Each round draws ``args.per_round`` clients uniformly without replacement, then
    ``fedavg_round(model, shards, images, labels, rng)`` trains them from ``model`` (their shards in
    the order drawn) and sets ``model`` to their average.
    """
    data = load_clients(args.data)
    device = torch.device(args.device)
    images, labels = data["images"].to(device), data["labels"].to(device)
    rng = seeded(args.seed)
    model = network().to(device)
    clock = RoundClock()
    for _ in range(args.rounds):
        clock.start()
        clients = rng.choice(len(data["shards"]), args.per_round, replace=False)
        fedavg_round(model, [data["shards"][client] for client in clients], images, labels, rng)
        if device.type == "cuda":
            torch.cuda.synchronize()  # the round's kernels have run, not just been queued
        clock.stop()
    clock.report()


class RoundClock:
    """Seconds of every round, from its start to its end."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = None

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    def report(self, **extra) -> None:
        print("ROUNDS " + json.dumps({"round_seconds": self.seconds, **extra}), flush=True)


def secagg_updates(count: int, numel: int, kept: float | None, seed: int):
    """The secure-aggregation benchmark's updates: ``count`` float32 arrays of ``numel`` values
    uniform in +-0.01 (the size of a FedAvg delta) and, with ``kept``, zero outside one shared
    random support (Algorithm 1's public mask), returned with it (or None).

    >>> values, support = secagg_updates(3, 1000, 0.1, seed=0)
    >>> len(values), values[0].dtype, bool((values[2][~support] == 0).all()), bool(50 < support.sum() < 150)
    (3, dtype('float32'), True, True)
    """
    rng = np.random.default_rng(seed)
    support = None if kept is None else rng.random(numel) < kept
    out = []
    for _ in range(count):
        values = rng.uniform(-0.01, 0.01, numel).astype(np.float32)
        if support is not None:
            values[~support] = 0.0
        out.append(values)
    return out, support


def seeded(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
