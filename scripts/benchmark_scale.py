"""Seconds per round and peak memory as the federation grows from N = 1,000 to 50,000 devices at K = 50.

Usage: python scripts/benchmark_scale.py [--devices 1000,10000,50000] [--per-round 50] [--rounds 8]
           [--forms alg1,variant] [--network lenet300_100] [--out-dir DIR]

A round's work is K devices' local steps, so its cost should follow K and not N: the server holds
one model, the schedule draws K of N, and the paper's variant keeps each device's log_sigma2 as a
row of a file in the run folder, read and written only for the devices sampled. Each (form, N)
runs ``scripts/fit.py`` twice in fresh processes, for 2 and for 2 + ``--rounds`` rounds (two
local steps of batch 1 a device, Fashion-MNIST split iid: at N = 50,000 the smallest shards the
data allows, one or two images, and the same work a round at every N), and the seconds a round
are the difference of the two runs' training times over ``--rounds`` (setting up and the first
rounds cancel). Printed per form and N: seconds a round and their ratio to the smallest N, the
setting up (the partition, built once), the peak RSS of the longer run (``wait4``), and the run
folder's size on disk. ``alg1`` is Algorithm 1 (``--share-log-sigma2``), ``variant`` the paper's.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_fed.runs.cli import OneLineParser, int_at_least, whole_numbers  # noqa: E402

FORMS = {"alg1": ["--share-log-sigma2"], "variant": []}


def fit_command(devices: int, per_round: int, rounds: int, form: str, network: str, out: Path) -> list[str]:
    """``scripts/fit.py`` for ``rounds`` rounds of ``per_round`` devices of ``devices``, in ``out``."""
    return [
        sys.executable, str(ROOT / "scripts" / "fit.py"), "--devices", str(devices),
        "--devices-per-round", str(per_round), "--local-steps", "2", "--batch-size", "1",
        "--network", network, "--max-rounds", str(rounds), "--max-epochs", "1000",
        "--limit-val-batches", "0", "--wandb-mode", "disabled", "--output-dir", str(out), *FORMS[form],
    ]  # fmt: skip


def run(command: list[str]) -> tuple[dict, float]:
    """Run ``command``; its ``summary.json`` and its peak RSS in GiB (its own and its children's)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark_scale.py: {' '.join(command[1:4])}... failed: {stderr.strip()[-500:]}")
    out = Path(command[command.index("--output-dir") + 1])
    return json.loads((out / "summary.json").read_text()), usage.ru_maxrss / 2**20


def folder_bytes(path: Path) -> int:
    """What ``path`` holds on disk (allocated blocks: a sparse file counts what was written)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def measure(devices: int, form: str, args, scratch: Path) -> dict:
    short, long = scratch / f"{form}-{devices}-short", scratch / f"{form}-{devices}-long"
    first, _ = run(fit_command(devices, args.per_round, 2, form, args.network, short))
    last, peak = run(fit_command(devices, args.per_round, 2 + args.rounds, form, args.network, long))
    row = {
        "form": form, "devices": devices,
        "round_seconds": (last["train_seconds"] - first["train_seconds"]) / args.rounds,
        "setup_seconds": last["wall_seconds"] - last["train_seconds"],
        "peak_rss_gib": peak, "disk_bytes": folder_bytes(long),
    }  # fmt: skip
    shutil.rmtree(short), shutil.rmtree(long)
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| form | N | seconds a round | vs the smallest N | setting up, s | peak RSS | run folder on disk |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(r for r in rows if r["form"] == row["form"])["round_seconds"]
        lines.append(
            f"| {row['form']} | {row['devices']:,} | {row['round_seconds']:.2f} | "
            f"{row['round_seconds'] / base:.2f}x | {row['setup_seconds']:.0f} | "
            f"{row['peak_rss_gib']:.2f} GiB | {row['disk_bytes'] / 2**20:.0f} MiB |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = OneLineParser(
        prog="benchmark_scale.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--devices", type=whole_numbers, default=[1000, 10000, 50000], help="the N to run, comma-separated"
    )
    parser.add_argument("--per-round", type=int_at_least(1), default=50)
    parser.add_argument("--rounds", type=int_at_least(1), default=8, help="rounds timed (after 2)")
    parser.add_argument("--forms", default="alg1,variant", help=f"from {', '.join(FORMS)}")
    parser.add_argument("--network", default="lenet300_100")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    devices = args.devices
    if min(devices) < args.per_round:
        shown = ",".join(map(str, devices))
        parser.error(f"--devices {shown}: every N must be at least --per-round {args.per_round}")
    forms = args.forms.split(",")
    if unknown := [f for f in forms if f not in FORMS]:
        parser.error(f"--forms {args.forms!r}: {unknown[0]!r} is not one of {', '.join(FORMS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lf-scale-") as scratch:
        for form in forms:
            for n in devices:
                rows.append(measure(n, form, args, Path(scratch)))
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
