"""Seconds per FedAvg round: lightning-fed against a plain PyTorch loop, Flower 1.42 and pfl-research.

Usage: python scripts/benchmark_simulation.py [--settings 100/10,1000/50] [--rounds 4] [--repeats 1]
           [--engines ours,plain,pfl,flower] [--device cpu]
           [--flower-python ~/lf-peers/flwr/bin/python] [--pfl-python ~/lf-peers/pfl/bin/python]

Every engine runs the same FedAvg on the same clients, one after the other, each in a fresh
process tree: Fashion-MNIST split iid over N clients (``FederatedDataModule``, seed 0), K sampled
per round, each one local epoch of SGD (lr 0.05) at batch 32 on CifarNet with plain layers, the
server averaging (``scripts/simulation/``). The peers run in their own virtual environments,
never the project's: an engine whose Python is not given (or cannot import its package) is
skipped with a line saying so. Printed per setting and engine: the median seconds per round
(the first round, a warm-up, left out), its ratio to the plain loop, and the peak memory of the
engine's whole process tree (sum of PSS, sampled every 0.5 s).

An engine of ours may be given a layout, ``NAME:PxT``: P processes hosting the clients (ours only;
the sampled clients of a round split between them by who hosts them) of T torch threads each
(``ours:2x1``, ``plain:1x2``; without one, one process at torch's default thread count). The ratio
printed is to the fastest layout of the plain loop in the same repeat: ``--engines
ours:1x2,ours:2x1,plain:1x1,plain:1x2`` puts each layout of ours beside the plain loop at its best
thread count. The peers run as their packages set themselves up.

``batched`` (not run unless asked for: ``--engines ours,plain,batched``) is the plain loop's
clients trained as one computation, ``torch.func.vmap`` over their stacked models: whether that
pays off, on the CPU and (``--device cuda``, where the peers are skipped) on a GPU.

This machine's speed drifts by 10-20 % over minutes (other tenants, thermal state), more than the
differences measured. ``--repeats R`` runs the engines R times in turn (ours, plain, ours, plain,
...), so each repeat compares engines that ran a minute apart: the ratio printed is the median
over repeats of each repeat's ratio, and the seconds the median over repeats.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
ENGINES = {
    "ours": "ours.py", "plain": "plain.py", "batched": "batched.py", "pfl": "pfl_research.py",
    "flower": "flower.py",
}  # fmt: skip
PEER_PACKAGE = {"pfl": "pfl", "flower": "flwr"}


def parse_engine(spec: str) -> tuple[str, int | None, int | None]:
    """``NAME`` or ``NAME:PxT`` as (name, processes, threads); None where no layout is given.

    Example::

        >>> parse_engine("ours:2x1"), parse_engine("plain")
        (('ours', 2, 1), ('plain', None, None))
        >>> parse_engine("plain:2x1")
        Traceback (most recent call last):
        ...
        ValueError: only ours hosts its clients in several processes; give plain:1xT
    """
    name, _, layout = spec.partition(":")
    if name not in ENGINES:
        raise ValueError(f"unknown {name!r}; choose from {', '.join(ENGINES)}")
    if not layout:
        return name, None, None
    processes, _, threads = layout.partition("x")
    if not (processes.isdigit() and threads.isdigit() and int(processes) >= 1 and int(threads) >= 1):
        raise ValueError(f"a layout is PxT, processes x threads, each at least 1 (ours:2x1), got {layout!r}")
    if name in PEER_PACKAGE:
        raise ValueError(f"{name} runs as its package sets itself up; give it no layout")
    if int(processes) > 1 and name != "ours":
        raise ValueError(f"only ours hosts its clients in several processes; give {name}:1xT")
    return name, int(processes), int(threads)


def write_clients(path: Path, num_clients: int, seed: int) -> None:
    """The clients' data as every engine reads it (``simulation/common.load_clients``)."""
    import torch

    from datamodules import FederatedDataModule

    dm = FederatedDataModule("fashion-mnist", num_clients, batch_size=32, seed=seed)
    dm.setup("fit")
    data = dm.train_data
    torch.save(
        {
            "images": data.images, "labels": data.labels, "mean": dm.info.mean[0], "std": dm.info.std[0],
            "shards": [torch.from_numpy(s) for s in dm.partition.shards],
            "num_clients": num_clients, "seed": seed, "val_size": dm.val_size,
        },
        path,
    )  # fmt: skip


def python_of(engine: str, args) -> str | None:
    """The interpreter of ``engine`` (a name), or None (with the reason printed) when it cannot run."""
    if engine not in PEER_PACKAGE:
        return sys.executable
    if args.device != "cpu":
        print(f"benchmark_simulation: {engine} skipped: it runs on the CPU only, not --device {args.device}")
        return None
    python = getattr(args, f"{engine}_python")
    if python is None:
        print(f"benchmark_simulation: {engine} skipped: give --{engine}-python (its own environment)")
        return None
    python = str(Path(python).expanduser())
    probe = subprocess.run([python, "-c", f"import {PEER_PACKAGE[engine]}"], capture_output=True)
    if probe.returncode != 0:
        print(f"benchmark_simulation: {engine} skipped: {python} cannot import {PEER_PACKAGE[engine]}")
        return None
    return python


def device_problem(device: str) -> str | None:
    """Why the engines cannot train on ``device`` here, or None.

    Example::

        >>> device_problem("cpu") is None, device_problem("tpu")
        (True, 'give cpu, cuda or cuda:N')
    """
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        return "give cpu, cuda or cuda:N"
    if parsed.type not in ("cpu", "cuda"):
        return "give cpu, cuda or cuda:N"
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} CUDA devices"
    return None


def engine_command(python: str, spec: str, data: Path, per_round: int, rounds: int, device: str) -> list[str]:
    """The command line of one engine (``spec``: a name, or ``NAME:PxT``)."""
    engine, processes, threads = parse_engine(spec)
    script = ROOT / "scripts" / "simulation" / ENGINES[engine]
    command = [python, str(script), str(data), "--rounds", str(rounds), "--per-round", str(per_round)]
    if engine in PEER_PACKAGE:
        return command
    command += ["--device", device]
    command += [] if threads is None else ["--threads", str(threads)]
    return command + ([] if processes is None or engine != "ours" else ["--processes", str(processes)])


def measure(python: str, spec: str, data: Path, per_round: int, rounds: int, device: str = "cpu") -> dict:
    """One engine's run in its own process tree: its round times and the tree's peak PSS."""
    from process_tree import tree_pss_bytes

    command = engine_command(python, spec, data, per_round, rounds, device)
    threads = parse_engine(spec)[2]
    env = dict(os.environ, **({} if threads is None else {"OMP_NUM_THREADS": str(threads)}))
    child = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_pss_bytes(child.pid))
        time.sleep(0.5)
    out, err = child.communicate()
    lines = [line for line in out.splitlines() if line.startswith("ROUNDS ")]
    if child.returncode != 0 or not lines:
        raise SystemExit(f"benchmark_simulation: {spec} failed:\n{(err or out)[-3000:]}")
    seconds = json.loads(lines[-1].removeprefix("ROUNDS "))["round_seconds"]
    return {"round_s": statistics.median(seconds[1:] or seconds), "rounds": seconds, "peak_gib": peak / 2**30}


def parse_args(argv=None) -> argparse.Namespace:
    """The options, checked: a bad one is a one-line error naming it (exit code 2)."""
    from lightning_fed.runs.cli import HelpFormatter, OneLineParser

    parser = OneLineParser(prog="benchmark_simulation.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--settings", default="100/10,1000/50", help="N/K pairs: clients / sampled per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per engine (the first is left out)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every engine, in turn")
    parser.add_argument(
        "--engines", default="ours,plain,pfl,flower", help=f"of {', '.join(ENGINES)}, each NAME or NAME:PxT"
    )
    parser.add_argument(
        "--flower-python", default=None, help="Python of a venv with flwr[simulation]==1.42.0"
    )
    parser.add_argument("--pfl-python", default=None, help="Python of a venv with pfl[pytorch]")
    parser.add_argument(
        "--device", default="cpu", help="where ours, plain and batched train (cuda: the peers are skipped)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    for spec in args.engines.split(","):
        try:
            parse_engine(spec)
        except ValueError as error:
            parser.error(f"--engines {args.engines}: {error}")
    for name in ("rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    try:
        args.settings = parse_settings(args.settings)
    except ValueError as error:
        parser.error(f"--settings {args.settings}: {error}")
    problem = device_problem(args.device)
    if problem:
        parser.error(f"--device {args.device}: {problem}")
    if args.device != "cpu" and any((parse_engine(s)[1] or 1) > 1 for s in args.engines.split(",")):
        parser.error(
            f"--engines {args.engines}: several processes run on the CPU only, not --device {args.device}"
        )
    return args


def parse_settings(text: str) -> list[tuple[int, int]]:
    """``N/K,N/K`` as ``[(N, K), ...]``: clients, and how many of them a round samples.

    Example::

        >>> parse_settings("100/10,1000/50")
        [(100, 10), (1000, 50)]
        >>> parse_settings("100/200")
        Traceback (most recent call last):
        ...
        ValueError: give N/K pairs with 1 <= K <= N, e.g. 100/10,1000/50
    """
    settings = []
    for part in text.split(","):
        clients, _, per_round = part.partition("/")
        try:
            pair = int(clients), int(per_round)
        except ValueError:
            pair = (0, 0)
        if not 1 <= pair[1] <= pair[0]:
            raise ValueError("give N/K pairs with 1 <= K <= N, e.g. 100/10,1000/50")
        settings.append(pair)
    return settings


def main(argv=None) -> None:
    args = parse_args(argv)
    engines = args.engines.split(",")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for clients, per_round in args.settings:
            data = Path(folder) / f"clients-{clients}.pt"
            write_clients(data, clients, args.seed)
            pythons = {spec: python_of(parse_engine(spec)[0], args) for spec in engines}
            for repeat in range(args.repeats):
                for engine, python in pythons.items():
                    if python is not None:
                        row = measure(python, engine, data, per_round, args.rounds, args.device)
                        setting_of = {"clients": clients, "per_round": per_round, "repeat": repeat}
                        results.append({**setting_of, "engine": engine, **row})
                        print(
                            f"{clients}/{per_round} #{repeat} {engine}: {row['round_s']:.2f} s a round",
                            flush=True,
                        )
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"table": summarise(results), "runs": results}, indent=2))


def summarise(results: list[dict]) -> list[dict]:
    """One row per setting and engine: the median seconds over repeats, and the median over repeats
    of the repeat's ratio to the plain loop's fastest layout in it (None without a plain run).

    Example::

        >>> rows = [{"clients": 10, "per_round": 2, "repeat": r, "engine": e, "round_s": s, "peak_gib": 1.0}
        ...         for r, (a, b) in enumerate([(2.0, 1.0), (3.0, 2.0), (1.1, 1.0)])
        ...         for e, s in (("ours", a), ("plain", b))]
        >>> [(row["engine"], row["round_s"], round(row["x_plain"], 2)) for row in summarise(rows)]
        [('ours', 2.0, 1.5), ('plain', 1.0, 1.0)]
    """

    def key(row: dict) -> tuple:
        return row["clients"], row["per_round"], row["engine"]

    rows = []
    for clients, per_round, engine in dict.fromkeys(map(key, results)):
        mine = [r for r in results if key(r) == (clients, per_round, engine)]
        plain = {}
        for r in results:
            if key(r)[:2] == (clients, per_round) and parse_engine(r["engine"])[0] == "plain":
                plain[r["repeat"]] = min(plain.get(r["repeat"], r["round_s"]), r["round_s"])
        ratios = [r["round_s"] / plain[r["repeat"]] for r in mine if r["repeat"] in plain]
        rows.append({
            "clients": clients, "per_round": per_round, "engine": engine, "repeats": len(mine),
            "round_s": statistics.median(r["round_s"] for r in mine),
            "x_plain": statistics.median(ratios) if ratios else None,
            "peak_gib": max(r["peak_gib"] for r in mine),
        })  # fmt: skip
    return rows


def print_table(results: list[dict]) -> None:
    head = f"{'clients/round':>13}  {'engine':<10} {'s/round':>8} {'x plain':>8} {'peak GiB':>9}"
    print(f"\n{head} {'repeats':>8}")
    for row in summarise(results):
        ratio = "-" if row["x_plain"] is None else f"{row['x_plain']:.2f}"
        setting = f"{row['clients']}/{row['per_round']}"
        print(
            f"{setting:>13}  {row['engine']:<10} {row['round_s']:>8.2f} {ratio:>8} {row['peak_gib']:>9.2f}"
            f" {row['repeats']:>8}"
        )


if __name__ == "__main__":
    main()
