"""Run several rows of RESULTS.md at once on one large machine: every side its own process.

Usage:
    python scripts/reproduce_parallel.py ROWS_FILE [--deadline-s SECONDS]

``ROWS_FILE`` holds one ``scripts/reproduce.py`` call per line (its arguments only), highest
priority first; ``#`` starts a comment. Every side of every row (dense baseline, sparse run)
starts at once, a dense baseline shared by several rows (``--dense-dir``) once. The processes of
the row on line ``i`` (from 0) run at ``nice 3 * i``, so the first rows get the CPU first. Each
side is the exact ``fit.py`` call ``reproduce.py`` makes, and writes to the same run folder and log,
so when both sides of a row are done this script calls ``reproduce.py`` with the row's own
arguments: it skips both sides and writes ``results/NAME.json``, the plot and the table, with the
row's own command. At the deadline the sides still running are stopped; their last epoch's
checkpoint stays, and the same call (or the row's ``reproduce.py`` call) resumes them.

On a GPU machine every side's device processes share the GPUs (``fit.py --accelerator auto``).

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

from lightning_fed.cli import OneLineParser  # noqa: E402
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


def side_jobs(rows: list[list[str]]) -> list[dict]:
    """Every distinct side to run: its command, run folder and nice level (of its first row)."""
    jobs: dict[Path, dict] = {}
    for line, row in enumerate(rows):
        sides = reproduce.plan(reproduce.parse_args(row))
        for side in ("dense", "sparse"):
            command, folder = sides[side]
            if folder not in jobs and not (folder / "summary.json").exists():
                jobs[folder] = {"command": command, "folder": folder, "nice": min(19, NICE_STEP * line)}
    return list(jobs.values())


def start(job: dict) -> subprocess.Popen:
    job["folder"].mkdir(parents=True, exist_ok=True)
    log = open(job["folder"].with_suffix(".log"), "a")  # noqa: SIM115 (open while the process runs)
    command = ["nice", "-n", str(job["nice"]), *job["command"]]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_all(processes: dict[Path, subprocess.Popen], deadline: float) -> set[Path]:
    """Waits for every process until ``deadline``; stops the rest. Returns the folders stopped."""
    while time.time() < deadline and any(p.poll() is None for p in processes.values()):
        time.sleep(5)
    stopped = {folder for folder, p in processes.items() if p.poll() is None}
    for folder in stopped:
        os.killpg(processes[folder].pid, signal.SIGTERM)
    end = time.time() + GRACE_S
    while time.time() < end and any(processes[f].poll() is None for f in stopped):
        time.sleep(1)
    for folder in stopped:
        if processes[folder].poll() is None:
            os.killpg(processes[folder].pid, signal.SIGKILL)
            processes[folder].wait()
    return stopped


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("rows", help="file of reproduce.py calls, one a line, highest priority first")
    p.add_argument("--deadline-s", type=float, default=None, help="stop what still runs after this long")
    args = p.parse_args(argv)
    if not Path(args.rows).is_file():
        p.error(f"rows file {args.rows!r} does not exist")
    if args.deadline_s is not None and not args.deadline_s > 0:
        p.error(f"--deadline-s must be > 0, got {args.deadline_s}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = read_rows(Path(args.rows))
    jobs = side_jobs(rows)  # every row is checked (and its config read) before anything starts
    began = time.time()
    processes = {job["folder"]: start(job) for job in jobs}
    deadline = began + args.deadline_s if args.deadline_s else float("inf")
    stopped = wait_all(processes, deadline)
    failed = 0
    for folder, process in processes.items():
        state = "stopped at the deadline" if folder in stopped else f"exit {process.returncode}"
        failed += folder not in stopped and process.returncode != 0
        print(f"{folder}: {state} after {time.time() - began:.0f} s; log {folder.with_suffix('.log')}")
    for row in rows:
        sides = reproduce.plan(reproduce.parse_args(row))
        if all((sides[side][1] / "summary.json").exists() for side in ("dense", "sparse")):
            reproduce.main(row)
        else:
            print(f"{' '.join(row)}: not finished; run this again to resume it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
