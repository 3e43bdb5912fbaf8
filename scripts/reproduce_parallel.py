"""Run several rows of RESULTS.md at once on one large machine: every side its own process.

Usage:
    python scripts/reproduce_parallel.py ROWS_FILE [--deadline-s SECONDS] [--max-device-processes N]

``ROWS_FILE`` holds one ``scripts/reproduce.py`` call per line (its arguments only), highest
priority first; ``#`` starts a comment. Every side of every row (dense baseline, sparse run)
starts at once, a dense baseline shared by several rows (``--dense-dir``) once; with
``--max-device-processes`` a side waits, in priority order, until the device processes already
running leave room for its own (one per federated device). The processes of
the row on line ``i`` (from 0) run at ``nice 3 * i``, so the first rows get the CPU first. Each
side is the exact ``fit.py`` call ``reproduce.py`` makes, and writes to the same run folder and log,
so when both sides of a row are done this script calls ``reproduce.py`` with the row's own
arguments: it skips both sides and writes ``results/NAME.json``, the plot and the table, with the
row's own command. At the deadline the sides still running are stopped; their last epoch's
checkpoint stays, and the same call (or the row's ``reproduce.py`` call) resumes them.

On a GPU machine every side's device processes share the GPUs (``fit.py --accelerator auto``).
Each holds about 1.7 GiB of GPU memory (CUDA context, cuBLAS workspace, the model), so an H200
(140 GiB) runs about 80 of them, an H100 (80 GiB) about 45; more fail with "CUDA out of memory".

Example ROWS_FILE::

    fmnist_16 --sparse-config configs/fmnist_16_tuned.yaml --name fmnist_16_tuned --dense-epochs 30
    fmnist_4
"""

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lightning_fed.runs.cli import OneLineParser  # noqa: E402
from scripts import reproduce  # noqa: E402

NICE_STEP = 3
GRACE_S = 30  # between the deadline's SIGTERM and SIGKILL


def read_rows(path: Path) -> list[list[str]]:
    """The reproduce.py arguments of each row of ``path``, comments and blank lines left out.

    Example::

        >>> import tempfile
        >>> rows = Path(tempfile.mkdtemp()) / "rows"
        >>> _ = rows.write_text("# two rows\\nfmnist_4\\n\\nfmnist_8 --name b  # a variant\\n")
        >>> read_rows(rows)
        [['fmnist_4'], ['fmnist_8', '--name', 'b']]
    """
    rows = [shlex.split(line, comments=True) for line in path.read_text().splitlines()]
    return [row for row in rows if row]


def side_jobs(plans: list[dict]) -> list[dict]:
    """Every distinct side of the rows' ``reproduce.plan``: command, run folder, nice (of its first row).

    A dense baseline shared by several rows runs the first row's call; rows that would need it
    with another epoch budget or device count are refused here, before anything starts, rather
    than by ``reproduce.py`` once the runs are over.
    """
    jobs: dict[Path, dict] = {}
    baselines: dict[Path, tuple[int, int]] = {}
    for line, sides in enumerate(plans):
        dense_dir, budget = sides["dense"][1], (sides["dense_epochs"], sides["devices"])
        if baselines.setdefault(dense_dir, budget) != budget:
            raise SystemExit(
                f"reproduce_parallel: row {line + 1} needs the dense baseline {dense_dir} for "
                f"{budget[0]} epochs on {budget[1]} devices, an earlier row for "
                f"{baselines[dense_dir][0]} on {baselines[dense_dir][1]}"
            )
        for side in ("dense", "sparse"):
            command, folder = sides[side]
            if folder not in jobs and not (folder / "summary.json").exists():
                nice = min(19, NICE_STEP * line)
                jobs[folder] = {
                    "command": command,
                    "folder": folder,
                    "nice": nice,
                    "devices": sides["devices"],
                }
    return list(jobs.values())


def start(job: dict) -> subprocess.Popen:
    """Starts one side in a session of its own (so the deadline can stop all its device processes)."""
    job["folder"].mkdir(parents=True, exist_ok=True)
    command = ["nice", "-n", str(job["nice"]), *job["command"]]
    with open(job["folder"].with_suffix(".log"), "a") as log:  # the child keeps its own copy
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run_all(jobs: list[dict], deadline: float, max_devices: float) -> tuple[dict, set[Path]]:
    """Runs the jobs, in order, at most ``max_devices`` device processes at a time, until ``deadline``.

    Returns every started job's process by folder, and the folders stopped at the deadline.
    """
    waiting, processes, running = list(jobs), {}, {}
    began = time.time()
    while (waiting or running) and time.time() < deadline:
        while waiting and sum(j["devices"] for j in running.values()) + waiting[0]["devices"] <= max_devices:
            job = waiting.pop(0)
            processes[job["folder"]] = running[job["folder"]] = job | {"process": start(job)}
            print(
                f"[{time.time() - began:5.0f} s] start {job['folder']} ({job['devices']} devices)", flush=True
            )
        time.sleep(1)
        for folder in [f for f, j in running.items() if j["process"].poll() is not None]:
            print(f"[{time.time() - began:5.0f} s] end {folder}", flush=True)
            del running[folder]
    stop([job["process"] for job in running.values()])
    return {folder: job["process"] for folder, job in processes.items()}, set(running)


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each process group (every device process of a side), SIGKILL after ``GRACE_S``."""
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    end = time.time() + GRACE_S
    while time.time() < end and any(process.poll() is None for process in processes):
        time.sleep(1)
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("rows", help="file of reproduce.py calls, one a line, highest priority first")
    p.add_argument("--deadline-s", type=float, default=None, help="stop what still runs after this long")
    p.add_argument(
        "--max-device-processes", type=int, default=None, help="device processes at a time (GPU memory)"
    )
    args = p.parse_args(argv)
    if not Path(args.rows).is_file():
        p.error(f"rows file {args.rows!r} does not exist")
    if args.deadline_s is not None and not args.deadline_s > 0:
        p.error(f"--deadline-s must be > 0, got {args.deadline_s}")
    if args.max_device_processes is not None and args.max_device_processes < 1:
        p.error(f"--max-device-processes must be >= 1, got {args.max_device_processes}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = read_rows(Path(args.rows))
    plans = [reproduce.plan(reproduce.parse_args(row)) for row in rows]  # every row checked first
    jobs = side_jobs(plans)
    cap = args.max_device_processes or float("inf")
    too_wide = [job for job in jobs if job["devices"] > cap]
    if too_wide:
        raise SystemExit(
            f"reproduce_parallel: {too_wide[0]['folder']} needs {too_wide[0]['devices']} device processes, "
            f"more than --max-device-processes {args.max_device_processes}"
        )
    began = time.time()
    deadline = began + args.deadline_s if args.deadline_s else float("inf")
    processes, stopped = run_all(jobs, deadline, cap)
    for job in jobs:
        if job["folder"] not in processes:
            print(f"{job['folder']}: not started before the deadline")
    failed = 0
    for folder, process in processes.items():
        state = "stopped at the deadline" if folder in stopped else f"exit {process.returncode}"
        if folder not in stopped and process.returncode != 0:
            state += f" ({reproduce.last_line(folder.with_suffix('.log'))})"
        failed += folder not in stopped and process.returncode != 0
        print(f"{folder}: {state} after {time.time() - began:.0f} s; log {folder.with_suffix('.log')}")
    for row, sides in zip(rows, plans):
        if all((sides[side][1] / "summary.json").exists() for side in ("dense", "sparse")):
            reproduce.main(row)
        else:
            print(f"{' '.join(row)}: not finished; run this again to resume it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
