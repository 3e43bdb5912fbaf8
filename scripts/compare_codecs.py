"""The compression methods side by side on one ledger: same data, devices, epoch budget and seed.

Usage:
    python scripts/compare_codecs.py [--epochs 2] [--runs-dir ~/lf-runs/codecs] [--only NAME ...]

Every method is one ``scripts/fit.py`` call on ``configs/fmnist_16_tuned.yaml`` (CifarNet, full
Fashion-MNIST, 16 iid devices, batch 128, Adam 1e-3 on the server's average) with ``--max-epochs``
set to the budget and the method's own flags (``METHODS``). A method whose run folder holds a
``summary.json`` is not run again; one with a checkpoint is resumed. When the methods asked for are
done the script writes their rows into ``results/codec_comparison_EPOCHS.json`` (``--only`` keeps
the file's other rows) and prints the markdown table of
RESULTS.md: test top-1, kept weights, wire bytes (upload + download + headers) and the paper's
measure as a percentage of dense distributed SGD over the same epoch budget (the first method's
steps, every value up and down), rounds, wall time, and the command.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lightning_fed.runs.cli import HelpFormatter, OneLineParser  # noqa: E402
from lightning_fed.runs.summary import has_summary, read_summary  # noqa: E402

CONFIG = "configs/fmnist_16_tuned.yaml"
METHODS = {
    "dense SGD": ["--dense"],
    "masks alone (the paper)": [],
    "top-k 0.1 % + error feedback (DGC)": ["--dense", "--codec", "topk:0.001:27", "--error-feedback"],
    "DGC as published: top-k 0.1 % + momentum correction, server SGD": [
        "--dense", "--codec", "topk:0.001:27", "--error-feedback", "--error-feedback-momentum", "0.9",
        "--server-optimizer", "fedavg", "--server-lr", "0.05",
    ],
    "8-bit QSGD": ["--dense", "--codec", "qsgd:8"],
    "signSGD + error feedback": [
        "--dense", "--codec", "sign", "--error-feedback", "--download-codec", "qsgd:8",
        "--download-error-feedback",
    ],
    "FedAvg, 5 local steps": ["--dense", "--local-steps", "5"],
    "masks + 4-bit QSGD + error feedback": [
        "--codec", "qsgd:4", "--error-feedback", "--download-codec", "qsgd:8", "--download-error-feedback",
    ],
    "masks + top-k 1 % + 4-bit QSGD + error feedback": [
        "--codec", "topk:0.01:27+qsgd:4", "--error-feedback", "--download-codec", "qsgd:8",
        "--download-error-feedback",
    ],
    "masks + 4 local steps + 4-bit QSGD + error feedback": [
        "--local-steps", "4", "--codec", "qsgd:4", "--error-feedback", "--download-codec", "qsgd:8",
    ],
    "masks + 8 local steps + 4-bit QSGD + error feedback": [
        "--local-steps", "8", "--codec", "qsgd:4", "--error-feedback", "--download-codec", "qsgd:8",
    ],
    "masks + the model's change downloaded + 8 local steps + 4-bit QSGD + error feedback": [
        "--local-steps", "8", "--codec", "qsgd:4", "--error-feedback", "--download-codec", "qsgd:8",
        "--download-delta", "--download-error-feedback",
    ],
}  # fmt: skip


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")[:40]


def command_of(name: str, epochs: int, runs: Path) -> list[str]:
    output = runs / f"{epochs}ep" / slug(name)
    return [
        "scripts/fit.py", "--config", CONFIG, "--max-epochs", str(epochs), *METHODS[name],
        "--output-dir", str(output),
    ]  # fmt: skip


def run(name: str, epochs: int, runs: Path) -> dict:
    """``name``'s summary, after running it unless its folder holds one; the command recorded keeps
    ``runs`` as given (``~/lf-runs/...``), so it runs as pasted on any machine."""
    shown, command = command_of(name, epochs, runs), command_of(name, epochs, runs.expanduser())
    output = Path(command[-1])
    if not has_summary(output):
        resume = ["--resume"] if (output / "checkpoints" / "last.ckpt").exists() else []
        print(f"compare_codecs.py: {name}: {shlex.join(['python', *command, *resume])}", flush=True)
        subprocess.run([sys.executable, *command, *resume], cwd=ROOT, check=True)
    summary = read_summary(output)
    return {"method": name, "command": " ".join(map(_shell_word, ["python", *shown])), **summary}


def _shell_word(word: str) -> str:
    """``word`` as a shell reads it: quoted only where needed, so ``~/...`` stays the home folder.

    Example::

        >>> _shell_word("~/lf-runs/a_b"), _shell_word("two words")
        ('~/lf-runs/a_b', "'two words'")
    """
    return word if re.fullmatch(r"[\w@%+=:,./~-]+", word) else shlex.quote(word)


def table(rows: list[dict]) -> str:
    """The markdown table; traffic as a fraction of dense SGD over the same epoch budget (the first
    row's ``comm_dense_bytes``: every value up and down at every one of its steps), so a method with
    fewer rounds (local steps) is charged for what it sent, not flattered by its own fewer steps."""
    reference = rows[0]["comm_dense_bytes"]
    columns = ["method", "top-1", "kept weights", "wire bytes, % of dense", "paper's measure, % of dense"]
    lines = ["| " + " | ".join([*columns, "rounds", "wall time", "command"]) + " |", "|---" * 8 + "|"]
    for row in rows:
        wire, paper = (100 * row[k] / reference for k in ("comm_wire_bytes", "comm_paper_bytes"))
        lines.append(
            f"| {row['method']} | {100 * row['test_acc']:.2f} % | {100 * row['kept_fraction']:.2f} % "
            f"| {wire:.2f} % | {paper:.2f} % "
            f"| {row['steps']} | {row['wall_seconds'] / 60:.0f} min | `{row['command']}` |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = OneLineParser(prog="compare_codecs.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="the epoch budget of every method")
    parser.add_argument("--runs-dir", type=Path, default=Path("~/lf-runs/codecs"))
    parser.add_argument(
        "--only", action="append", default=None, help="a method, or methods joined by commas (default: all)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: give an epoch budget of at least 1")
    names = list(METHODS) if args.only is None else [n for value in args.only for n in method_names(value)]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        parser.error(f"--only: unknown methods {unknown}; choose from {list(METHODS)}")
    out = ROOT / "results" / f"codec_comparison_{args.epochs}ep.json"
    rows = merged(out, [run(name, args.epochs, args.runs_dir) for name in names])
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


def method_names(value: str) -> list[str]:
    """The methods one ``--only`` names: a method's whole name (which may hold commas), else names
    joined by commas.

    Example::

        >>> method_names("FedAvg, 5 local steps"), method_names("dense SGD,8-bit QSGD")
        (['FedAvg, 5 local steps'], ['dense SGD', '8-bit QSGD'])
    """
    return [value] if value in METHODS else [name.strip() for name in value.split(",")]


def merged(path: Path, new_rows: list[dict]) -> list[dict]:
    """The rows of ``path`` (an earlier comparison with the same budget) with ``new_rows`` in place
    of theirs, in ``METHODS`` order, so ``--only`` adds a method without rerunning the others and
    dense SGD, the reference, stays first. The runs are deterministic on the CPU (same seed), so
    the rows of separate calls are the rows one call would give.

    Example::

        >>> old = [{"method": "dense SGD", "steps": 54}, {"method": "8-bit QSGD", "steps": 1}]
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "rows.json"
        >>> _ = path.write_text(json.dumps(old))
        >>> [(r["method"], r["steps"]) for r in merged(path, [{"method": "8-bit QSGD", "steps": 54}])]
        [('dense SGD', 54), ('8-bit QSGD', 54)]
    """
    rows = {row["method"]: row for row in json.loads(path.read_text())} if path.exists() else {}
    rows.update({row["method"]: row for row in new_rows})
    return [rows[name] for name in METHODS if name in rows]


if __name__ == "__main__":
    main()
