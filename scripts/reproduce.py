"""Reproduce one of the paper's settings: the dense baseline and the sparse run, same seeds.

Usage:
    python scripts/reproduce.py fmnist_16 [--runs-dir ~/lf-runs/reproduce] [--sparse-config FILE]
    python scripts/reproduce.py mnist5k_4 --sparse-config configs/mnist5k_4_beta.yaml \
        --name mnist5k_4_beta --dense-dir ~/lf-runs/reproduce/mnist5k_4/dense   # a variant row
    python scripts/reproduce.py --table          # only rewrite RESULTS.md from results/*.json

Stopping rule (one for both sides): a fixed epoch budget, the sparse run's from its config
(``max_epochs``), the dense baseline's half of it (``--dense-epochs`` to change); the test
accuracy is that of the model at the end of its budget (no checkpoint picked on test data).
Each side's communication counts until its own end, and the sparse run's is reported as a
fraction of the dense baseline's, as the paper does: dense distributed SGD over the baseline's own
steps (every value sent, up and down). Both runs go through ``scripts/fit.py``
with the same seed, data split and ``FederatedStrategy``, so both are counted by the same code.

Runs take hours on a CPU: run this again after an interruption and it resumes each side from
its last checkpoint, skipping a side that has finished (its ``summary.json`` exists). When both
are done it writes ``results/NAME.json`` (NAME is the setting unless ``--name`` gives a variant's),
writes the Figure-2 plot next to it, and rewrites the table of ``RESULTS.md`` between its markers.
A variant (another sparse schedule of the same setting) can share a finished dense baseline
through ``--dense-dir``; the paper's numbers come from the setting either way.
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lightning_fed.runs.cli import OneLineParser  # noqa: E402
from lightning_fed.runs.epoch_log import read_epochs  # noqa: E402
from lightning_fed.runs.plots import plot_accuracy_against_bytes, plot_transmitted_fraction  # noqa: E402
from lightning_fed.runs.summary import has_summary, read_summary  # noqa: E402
from scripts.fit import parse_args as fit_arguments  # noqa: E402

START, END = "<!-- results:start -->", "<!-- results:end -->"
NAME = re.compile(r"[A-Za-z0-9_.-]+")

# The paper's Tables 3-5, random initialisation (reference.md, section 3): top-1 %, kept %, comm %.
PAPER = {
    "fmnist_4": (89.46, 4.3, 12.1),
    "fmnist_8": (89.51, 5.4, 12.6),
    "fmnist_16": (89.27, 5.8, 13.7),
    "mnist5k_4": (98.35, 1.9, 11.6),
    "mnist5k_16": (98.23, 3.2, 15.2),
}


def fit_command(config: Path, folder: Path, dense: bool, epochs: int, extra: list[str]) -> list[str]:
    """The fit.py call of one side; ``--resume`` when the side has a checkpoint to continue."""
    command = [sys.executable, str(ROOT / "scripts" / "fit.py"), "--config", str(config)]
    command += ["--output-dir", str(folder), "--max-epochs", str(epochs), *(["--dense"] if dense else [])]
    if (folder / "checkpoints" / "last.ckpt").exists():
        command.append("--resume")
    return command + extra


def run_side(command: list[str], folder: Path) -> dict:
    """Runs (or resumes) one side to the end of its budget; returns its summary."""
    if not has_summary(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder.with_suffix(".log"), "a") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise SystemExit(
                f"reproduce: {folder.name} run failed (exit {result.returncode}: "
                f"{last_line(Path(log.name))}); see {log.name}"
            )
    return read_summary(folder)


def last_line(log: Path) -> str:
    r"""The last non-blank line of a side's log: fit.py's one-line error, or a traceback's last line.

    Example::

        >>> import tempfile
        >>> log = Path(tempfile.mkdtemp()) / "sparse.log"
        >>> _ = log.write_text("epoch 0\nfit.py: error: --devices: 0 is not allowed\n\n")
        >>> last_line(log)
        'fit.py: error: --devices: 0 is not allowed'
    """
    with open(log, "rb") as file:  # a long run's log is megabytes of progress bars: read its end
        file.seek(max(0, file.seek(0, 2) - 65536))
        tail = file.read().decode(errors="replace")
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


def check_dense_baseline(dense: dict, folder: Path, epochs: int, devices: int) -> None:
    """Refuses a (shared) dense baseline of another budget or device count than the sparse side's.

    Example::

        >>> check_dense_baseline({"epochs": 30, "devices": 16}, Path("d"), 30, 4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        SystemExit: reproduce: the dense baseline in d ran on 16 devices, not the 4 of the sparse run; ...
    """
    if dense["epochs"] != epochs:
        raise SystemExit(
            f"reproduce: the dense baseline in {folder} ran {dense['epochs']} epochs, not the "
            f"{epochs} asked; give --dense-epochs {dense['epochs']} or another --dense-dir"
        )
    if dense["devices"] != devices:
        raise SystemExit(
            f"reproduce: the dense baseline in {folder} ran on {dense['devices']} devices, not the "
            f"{devices} of the sparse run; give another --dense-dir"
        )


def communication_vs_dense(dense: dict, sparse: dict) -> dict:
    """The sparse run's traffic until its end over the dense baseline's until its own end.

    The baseline is dense distributed SGD (``comm_dense_bytes``: every value of every step, up
    and down), so a longer sparse run pays for its extra epochs.

    Example::

        >>> communication_vs_dense(
        ...     {"comm_dense_bytes": 1000}, {"comm_paper_bytes": 100, "comm_wire_bytes": 120}
        ... )
        {'paper_fraction': 0.1, 'wire_fraction': 0.12, 'golomb_fraction': None}

    ``golomb_fraction`` is None for a run counted before the ledger had the Golomb measure.
    """
    baseline = dense["comm_dense_bytes"]
    golomb = sparse.get("comm_golomb_bytes")
    return {
        "paper_fraction": sparse["comm_paper_bytes"] / baseline,
        "wire_fraction": sparse["comm_wire_bytes"] / baseline,
        "golomb_fraction": None if golomb is None else golomb / baseline,
    }


def setting_result(setting: str, command: str, dense: dict, sparse: dict, name: str | None = None) -> dict:
    """The row of one setting (or of a variant ``name`` of it): ours next to the paper's."""
    top1, kept, comm = PAPER.get(setting, (None, None, None))
    return {
        "setting": setting,
        "name": name or setting,
        "command": command,
        "dense": dense,
        "sparse": sparse,
        "comm_vs_dense": communication_vs_dense(dense, sparse),
        "paper": {"top1": top1, "kept": kept, "comm": comm},
    }


def table(results: list[dict]) -> str:
    """The markdown table of all finished settings."""
    head = (
        "| setting | dense top-1 | sparse top-1 (paper) | kept weights (paper) "
        "| comm, paper's measure (paper) | comm, wire bytes | comm, Golomb-coded "
        "| epochs dense / sparse | train time |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        d, s, p = r["dense"], r["sparse"], r["paper"]
        comm = communication_vs_dense(d, s)
        hours = (d.get("train_seconds", d["wall_seconds"]) + s.get("train_seconds", s["wall_seconds"])) / 3600
        rows.append(
            f"| {r.get('name', r['setting'])} | {100 * d['test_acc']:.2f} % "
            f"| {100 * s['test_acc']:.2f} % ({_paper(p['top1'])}) "
            f"| {100 * s['kept_fraction']:.2f} % ({_paper(p['kept'])}) "
            f"| {100 * comm['paper_fraction']:.2f} % ({_paper(p['comm'])}) "
            f"| {100 * comm['wire_fraction']:.2f} % | {_percent(comm['golomb_fraction'])} "
            f"| {d['epochs']} / {s['epochs']} | {hours:.1f} h{_hardware(d, s)} |"
        )
    commands = "\n".join(f"- {r.get('name', r['setting'])}: `{r['command']}`" for r in results)
    return head + "\n".join(rows) + "\n\nCommands (run from the repository root):\n\n" + commands + "\n"


def _hardware(dense: dict, sparse: dict) -> str:
    """' (H200)' after a row's time: what both sides trained on; '' for rows run before it was kept."""
    names = dict.fromkeys(side["hardware"] for side in (dense, sparse) if side.get("hardware"))
    return f" ({' / '.join(names)})" if names else ""


def _percent(fraction) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f} %"


def _paper(value) -> str:
    return "-" if value is None else f"{value} %"


def write_table(results_dir: Path, markdown: Path) -> None:
    """Rewrites the part of ``markdown`` between the markers from ``results_dir/*.json``."""
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    text = markdown.read_text() if markdown.exists() else f"# Results\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        raise SystemExit(f"reproduce: {markdown} lacks the markers {START} and {END}")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    markdown.write_text(f"{before}{START}\n{table(results)}{END}{after}")


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("setting", nargs="?", help=f"one of {', '.join(PAPER)} (configs/SETTING.yaml)")
    p.add_argument("--sparse-config", help="the sparse run's config (default configs/SETTING.yaml)")
    p.add_argument("--dense-epochs", type=int, help="the dense budget (default: half the sparse one)")
    p.add_argument("--name", help="the row, results file and run folder of a variant (default: the setting)")
    p.add_argument("--runs-dir", default="~/lf-runs/reproduce", help="run folders, outside the work tree")
    p.add_argument("--dense-dir", help="the dense baseline's run folder (default RUNS_DIR/NAME/dense)")
    p.add_argument("--results-dir", default=str(ROOT / "results"), help="where SETTING.json goes")
    p.add_argument("--results-md", default=str(ROOT / "RESULTS.md"), help="the table to rewrite")
    p.add_argument("--table", action="store_true", help="only rewrite the table")
    p.epilog = "Options after '--' go to fit.py, both sides: reproduce.py fmnist_16 -- --seed 1"
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.extra = argv[cut + 1 :]
    if not args.table and args.setting is None:
        p.error("give a setting, or --table")
    if args.setting is not None and args.sparse_config is None:
        args.sparse_config = str(ROOT / "configs" / f"{args.setting}.yaml")
    if args.setting is not None and not Path(args.sparse_config).is_file():
        p.error(f"setting {args.setting!r} has no config {args.sparse_config!r}; give --sparse-config")
    if args.dense_epochs is not None and args.dense_epochs < 1:
        p.error(f"--dense-epochs must be >= 1, got {args.dense_epochs}")
    if args.name is not None and not NAME.fullmatch(args.name):
        p.error(f"--name {args.name!r} is not allowed (letters, digits, '_', '-' and '.' only)")
    args.name = args.name or args.setting
    return args


def plan(args) -> dict:
    """A row's two sides: each side's fit.py call and run folder, and what the baseline must match."""
    config = Path(args.sparse_config)
    fit_args = fit_arguments(["--config", str(config), *args.extra])
    dense_epochs = args.dense_epochs or max(fit_args.max_epochs // 2, 1)
    runs = Path(args.runs_dir).expanduser() / args.name
    dense_dir = Path(args.dense_dir).expanduser() if args.dense_dir else runs / "dense"
    sparse_dir = runs / "sparse"
    return {
        "dense": (fit_command(config, dense_dir, True, dense_epochs, args.extra), dense_dir),
        "sparse": (fit_command(config, sparse_dir, False, fit_args.max_epochs, args.extra), sparse_dir),
        "dense_epochs": dense_epochs,
        "devices": fit_args.devices,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    results_dir, markdown = Path(args.results_dir), Path(args.results_md)
    if args.table:
        write_table(results_dir, markdown)
        return
    sides = plan(args)
    start = time.time()
    dense = run_side(*sides["dense"])
    check_dense_baseline(dense, sides["dense"][1], sides["dense_epochs"], sides["devices"])
    sparse_dir = sides["sparse"][1]
    sparse = run_side(*sides["sparse"])
    command = "python scripts/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = setting_result(args.setting, command, dense, sparse, args.name)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    ledger = json.loads((sparse_dir / "ledger.json").read_text())
    plot_transmitted_fraction({args.name: ledger}, results_dir / f"{args.name}_figure2.png")
    dense_dir = sides["dense"][1]
    both = {
        "dense": (json.loads((dense_dir / "ledger.json").read_text()), read_epochs(dense_dir)),
        "sparse (ours)": (ledger, read_epochs(sparse_dir)),
    }
    plot_accuracy_against_bytes(both, results_dir / f"{args.name}_accuracy_against_bytes.png")
    write_table(results_dir, markdown)
    print(f"{args.name}: done in {time.time() - start:.0f} s this call; {markdown} updated")


if __name__ == "__main__":
    main()
