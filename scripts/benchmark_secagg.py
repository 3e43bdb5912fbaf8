"""The cost of secure aggregation per round: seconds and bytes against the plain sum, side by side.

Usage: python scripts/benchmark_secagg.py [--per-round 10,50] [--numel 1384586] [--kept 0.03]
           [--repeats 3] [--flower-python ~/lf-peers/flwr/bin/python] [--out FILE.json]

For each K (devices a round) and each form, K updates of random values (uniform in +-0.01, the
size of a FedAvg delta) are summed twice in this process: **plain**, as the server sums them
without it (each update encoded by the lossless codec, decoded and added), and **secure**, by
SecAgg+ (fixed point, keys, encrypted shares, masked words, unmasking; ``lightning_fed.secure``)
with its default K-neighbour graph. The forms: ``dense`` (``--numel`` values, CifarNet's shared
parameters by default) and ``sparse`` (Algorithm 1: the ``--kept`` fraction of them, the public
mask's kept coordinates, which every device sends and the plain codec writes with positions).
Printed per K and form: the median seconds of ``--repeats`` sums each way and their ratio, the
bytes of the round each way (uploads and downloads; for SecAgg+ every kind of message) and their
ratio. The devices' training is left out: it is the same either way.

With ``--flower-python PYTHON`` (a virtual environment with ``flwr[simulation]==1.42.0``, never
the project's), Flower 1.42 sums the same updates too, in its own process per form and way
(``scripts/simulation/flower_secagg.py``): K clients in its Ray simulation, FedAvg through its
default fit workflow (plain) and through ``SecAggPlusWorkflow`` with the same neighbours and
threshold, ``--repeats`` rounds timed after a first (Ray's start-up) left out, every message's
bytes as Flower's protobuf carries it. A second table sets its rounds beside ours.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "simulation"))  # the updates, which Flower's engine reads too

from lightning_fed.runs.cli import OneLineParser, int_at_least, whole_numbers  # noqa: E402


def updates(count: int, numel: int, kept: float | None, seed: int):
    """``count`` flat float32 updates; with ``kept``, zero outside one shared random support."""
    import torch
    from common import secagg_updates

    values, support = secagg_updates(count, numel, kept, seed)
    return [torch.from_numpy(v) for v in values], (None if support is None else torch.from_numpy(support))


def plain_round(tensors) -> tuple[float, int]:
    """Seconds and upload bytes of the plain sum: each update encoded, decoded and added."""
    from lightning_fed.communication import SparseCodec

    codec, start, sent = SparseCodec(), time.perf_counter(), 0
    total = None
    for tensor in tensors:
        payload = codec.encode([tensor])
        sent += len(payload)
        decoded = codec.decode(payload, [tensor.numel()])[0]
        total = decoded if total is None else total + decoded
    return time.perf_counter() - start, sent


def secure_round(tensors, keep, seed: int) -> tuple[float, dict]:
    """Seconds and bytes by kind of the SecAgg+ sum of ``tensors`` (the kept coordinates only)."""
    from lightning_fed.secure.fixed_point import FixedPoint
    from lightning_fed.secure.options import resolved_secagg
    from lightning_fed.secure.secagg import SecAggPlus

    per_round = len(tensors)
    defaults = argparse.Namespace(secagg_neighbours=None, secagg_threshold=None)
    k, t = resolved_secagg(defaults, per_round)
    start = time.perf_counter()
    point = FixedPoint(1.0, per_round)
    keeps = None if keep is None else [keep]
    words = {d: point.encode([tensor], keeps, seed=(seed, d)) for d, tensor in enumerate(tensors)}
    outcome = SecAggPlus(k, t, seed=seed).run(list(range(per_round)), words, step=0)
    point.decode(outcome.total, keeps, [tensors[0].numel()])
    return time.perf_counter() - start, outcome.bytes


def measure(per_round: int, form: str, args) -> dict:
    tensors, keep = updates(per_round, args.numel, args.kept if form == "sparse" else None, seed=per_round)
    plain, secure = [], []
    for repeat in range(args.repeats):  # in turn, so both see the same machine
        seconds, plain_bytes = plain_round(tensors)
        plain.append(seconds)
        seconds, by_kind = secure_round(tensors, keep, seed=repeat)
        secure.append(seconds)
    secure_up = sum(v for k, v in by_kind.items() if k.endswith("/up"))
    return {
        "per_round": per_round, "form": form,
        "plain_seconds": statistics.median(plain), "secure_seconds": statistics.median(secure),
        "plain_upload_bytes": plain_bytes, "secure_upload_bytes": secure_up,  # downloads: the same
        "secure_extra_download_bytes": sum(v for k, v in by_kind.items() if k.endswith("/down")),
        "secure_bytes": by_kind,
    }  # fmt: skip


def flower_round(python: str, per_round: int, form: str, args, secure: bool) -> dict:
    """Flower's median seconds a round and its bytes a round by kind, one run in its own process."""
    from lightning_fed.secure.options import resolved_secagg

    script = ROOT / "scripts" / "simulation" / "flower_secagg.py"
    command = [python, str(script), "--per-round", str(per_round), "--numel", str(args.numel)]
    command += ["--seed", str(per_round), "--rounds", str(args.repeats + 1)]  # the updates of ``measure``
    command += ["--kept", str(args.kept)] if form == "sparse" else []
    if secure:
        k, t = resolved_secagg(argparse.Namespace(secagg_neighbours=None, secagg_threshold=None), per_round)
        command += ["--secure", "--num-shares", str(k + 1), "--threshold", str(t)]  # Flower counts its own
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("ROUNDS ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout)[-3000:]
        raise SystemExit(f"benchmark_secagg: Flower's {form} round failed:\n{tail}")
    report = json.loads(lines[-1].removeprefix("ROUNDS "))
    rounds = len(report["round_seconds"])
    return {
        "seconds": statistics.median(report["round_seconds"][1:]),
        "bytes": {kind: count / rounds for kind, count in report["bytes"].items()},
    }


def flower_measure(python: str, row: dict, args) -> dict:
    """``row`` (ours) with Flower's plain and SecAgg+ rounds of the same updates beside it."""
    plain = flower_round(python, row["per_round"], row["form"], args, secure=False)
    secure = flower_round(python, row["per_round"], row["form"], args, secure=True)

    def total(way: dict, direction: str) -> float:
        return sum(v for k, v in way["bytes"].items() if k.endswith(direction))

    return {
        "flower_plain_seconds": plain["seconds"], "flower_secure_seconds": secure["seconds"],
        "flower_plain_upload_bytes": total(plain, "/up"), "flower_secure_upload_bytes": total(secure, "/up"),
        "flower_secure_extra_download_bytes": total(secure, "/down") - total(plain, "/down"),
        "flower_secure_bytes": secure["bytes"],
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = [
        "| K | form | plain sum, s | SecAgg+, s | ratio | plain uploads | SecAgg+ uploads | ratio "
        "| SecAgg+'s downloads besides |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['per_round']} | {r['form']} | {r['plain_seconds']:.2f} | {r['secure_seconds']:.2f} | "
            f"{r['secure_seconds'] / r['plain_seconds']:.1f}x | {r['plain_upload_bytes'] / 2**20:.1f} MiB | "
            f"{r['secure_upload_bytes'] / 2**20:.1f} MiB | "
            f"{r['secure_upload_bytes'] / r['plain_upload_bytes']:.2f}x | "
            f"{r['secure_extra_download_bytes'] / 2**10:.0f} KiB |"
        )
    return "\n".join(lines)


def flower_table(rows: list[dict]) -> str:
    """Each system's secure round against its own plain one, and Flower's against ours."""
    lines = [
        "| K | form | Flower plain, s | Flower SecAgg+, s | its added s | our added s | Flower SecAgg+ "
        "/ ours | Flower SecAgg+ uploads | vs its plain | vs ours | Flower's downloads besides |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        flower_added = r["flower_secure_seconds"] - r["flower_plain_seconds"]
        lines.append(
            f"| {r['per_round']} | {r['form']} | {r['flower_plain_seconds']:.2f} | "
            f"{r['flower_secure_seconds']:.2f} | {flower_added:.2f} | "
            f"{r['secure_seconds'] - r['plain_seconds']:.2f} | "
            f"{r['flower_secure_seconds'] / r['secure_seconds']:.1f}x | "
            f"{r['flower_secure_upload_bytes'] / 2**20:.1f} MiB | "
            f"{r['flower_secure_upload_bytes'] / r['flower_plain_upload_bytes']:.2f}x | "
            f"{r['flower_secure_upload_bytes'] / r['secure_upload_bytes']:.2f}x | "
            f"{r['flower_secure_extra_download_bytes'] / 2**10:.0f} KiB |"
        )
    return "\n".join(lines)


def flower_python(given: str | None, parser) -> str | None:
    """The interpreter of Flower's environment, checked to import flwr; a one-line error if not."""
    if given is None:
        return None
    python = str(Path(given).expanduser())
    try:
        imports = subprocess.run([python, "-c", "import flwr"], capture_output=True).returncode == 0
    except OSError:
        imports = False
    if not imports:
        parser.error(f"--flower-python {given}: it cannot import flwr (give the python of a venv with flwr)")
    return python


def main(argv=None) -> None:
    parser = OneLineParser(
        prog="benchmark_secagg.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--per-round", type=whole_numbers, default=[10, 50], help="K, the devices of a round, comma-separated"
    )
    parser.add_argument("--numel", type=int_at_least(1), default=1_384_586, help="values of an update")
    parser.add_argument("--kept", type=float, default=0.03, help="the sparse form's kept fraction")
    parser.add_argument("--repeats", type=int_at_least(1), default=3)
    parser.add_argument(
        "--flower-python", default=None, help="a venv's python with flwr[simulation]==1.42.0 (Flower too)"
    )
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    sizes = args.per_round
    if min(sizes) < 3:
        parser.error(f"--per-round {','.join(map(str, sizes))}: a secure round needs at least 3 devices")
    if not 0 < args.kept <= 1:
        parser.error(f"--kept {args.kept}: give a fraction in (0, 1]")
    flower = flower_python(args.flower_python, parser)
    rows = []
    for per_round in sizes:
        for form in ("dense", "sparse"):
            rows.append(measure(per_round, form, args))
            if flower:
                rows[-1].update(flower_measure(flower, rows[-1], args))
            printed = {k: v for k, v in rows[-1].items() if not k.endswith("secure_bytes")}
            print(json.dumps(printed), flush=True)
    print(table(rows))
    if flower:
        print(flower_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
