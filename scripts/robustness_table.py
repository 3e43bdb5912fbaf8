"""Each aggregator under each attack, on one budget: test accuracy, the price of robustness shown.

Usage:
    python scripts/robustness_table.py [--rounds 60] [--runs-dir ~/lf-runs/robust] [--kinds sparse,dense]
                                       [--aggregators mean,median] [--attacks none,sign_flip]

Every cell is one ``scripts/fit.py`` call: Fashion-MNIST, 16 iid devices, LeNet-300-100, batch 64,
``--max-rounds`` the budget, seed 0, 20 % attackers (3 of 16, drawn from the seed); ``sparse`` is
Algorithm 1 with the server's mask check (``--share-log-sigma2 --enforce-mask``), ``dense`` the
dense baseline. A cell whose run folder holds a ``summary.json`` is not run again; one with a
checkpoint is resumed. The script writes every finished cell into ``results/robustness_16.json``
(cells of earlier calls kept) and prints the markdown table of RESULTS.md, one row per aggregator
and kind, one column per attack, with the command of a cell below it.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lightning_fed.runs.cli import HelpFormatter, OneLineParser  # noqa: E402
from lightning_fed.runs.summary import has_summary, read_summary  # noqa: E402

BASE = [
    "--dataset", "fashion-mnist", "--devices", "16", "--network", "lenet300_100", "--batch-size", "64",
    "--val-size", "5000", "--seed", "0", "--wandb-mode", "disabled",
]  # fmt: skip
KINDS = {"sparse": ["--share-log-sigma2", "--enforce-mask"], "dense": ["--dense"]}
AGGREGATORS = ["mean", "median", "trimmed_mean:0.25", "krum:3", "multi_krum:3:10", "bulyan:3"]
ATTACKS = ["none", "sign_flip", "scale:10", "scale:-10", "gaussian:1", "label_flip", "alie", "ipm:0.1"]
FRACTION = "0.2"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())


def command_of(kind: str, aggregator: str, attack: str, rounds: int, runs: Path) -> list[str]:
    attacked = [] if attack == "none" else ["--attack", attack, "--malicious-fraction", FRACTION]
    output = runs / f"{rounds}r" / kind / f"{slug(aggregator)}__{slug(attack)}"
    return [
        "scripts/fit.py", *BASE, *KINDS[kind], "--max-rounds", str(rounds), "--aggregator", aggregator,
        *attacked, "--output-dir", str(output),
    ]  # fmt: skip


def run(kind: str, aggregator: str, attack: str, rounds: int, runs: Path) -> dict:
    """The cell's summary, after running it unless its folder holds one."""
    shown, command = (command_of(kind, aggregator, attack, rounds, r) for r in (runs, runs.expanduser()))
    output = Path(command[-1])
    if not has_summary(output):
        resume = ["--resume"] if (output / "checkpoints" / "last.ckpt").exists() else []
        print(f"robustness_table.py: {shlex.join(['python', *command, *resume])}", flush=True)
        subprocess.run([sys.executable, *command, *resume], cwd=ROOT, check=True)
    summary = read_summary(output)
    return {
        "kind": kind, "aggregator": aggregator, "attack": attack, "rounds": rounds,
        "test_acc": summary["test_acc"], "wall_seconds": summary["wall_seconds"],
        "command": " ".join(["python", *shown]),
    }  # fmt: skip


def table(cells: list[dict]) -> str:
    """Rows (kind, aggregator) by columns (attack): test top-1 in %; '-' where not run.

    Example::

        >>> print(table([{"kind": "sparse", "aggregator": "mean", "attack": "none", "test_acc": 0.8}]))
        | kind | aggregator | none |
        |---|---|---|
        | sparse | mean | 80.0 |
    """
    attacks = [a for a in ATTACKS if any(c["attack"] == a for c in cells)]
    rows = list(dict.fromkeys((c["kind"], c["aggregator"]) for c in cells))
    found = {(c["kind"], c["aggregator"], c["attack"]): c["test_acc"] for c in cells}
    lines = ["| kind | aggregator | " + " | ".join(attacks) + " |", "|---" * (2 + len(attacks)) + "|"]
    for kind, aggregator in rows:
        values = [found.get((kind, aggregator, a)) for a in attacks]
        shown = ["-" if v is None else f"{100 * v:.1f}" for v in values]
        lines.append(f"| {kind} | {aggregator} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def _names(value: str, allowed: list[str], option: str, parser) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        parser.error(f"{option}: unknown {unknown or value!r}; choose from {','.join(allowed)}")
    return names


def main(argv=None) -> None:
    parser = OneLineParser(prog="robustness_table.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=int, default=60, help="the budget of every cell, in rounds")
    parser.add_argument("--runs-dir", type=Path, default=Path("~/lf-runs/robust"))
    parser.add_argument("--kinds", default="sparse", help=f"of {','.join(KINDS)}")
    parser.add_argument("--aggregators", default=",".join(AGGREGATORS), help="of the default")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="of the default")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give a budget of at least 1 round")
    kinds = _names(args.kinds, list(KINDS), "--kinds", parser)
    aggregators = _names(args.aggregators, AGGREGATORS, "--aggregators", parser)
    attacks = _names(args.attacks, ATTACKS, "--attacks", parser)
    out = ROOT / "results" / "robustness_16.json"
    cells = json.loads(out.read_text()) if out.exists() else []
    for kind in kinds:
        for aggregator in aggregators:
            for attack in attacks:
                cell = run(kind, aggregator, attack, args.rounds, args.runs_dir)
                key = (cell["kind"], cell["aggregator"], cell["attack"], cell["rounds"])
                cells = [c for c in cells if (c["kind"], c["aggregator"], c["attack"], c["rounds"]) != key]
                cells.append(cell)
                out.write_text(json.dumps(cells, indent=1) + "\n")
    print(table([c for c in cells if c["rounds"] == args.rounds]))
    print(f"\nA cell's command: {cells[-1]['command']}")


if __name__ == "__main__":
    main()
