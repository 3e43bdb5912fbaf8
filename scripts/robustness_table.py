"""Each aggregator under each attack, on one budget: test accuracy, the price of robustness shown.

Usage:
    python scripts/robustness_table.py [--rounds 60] [--runs-dir ~/lf-runs/robust] [--kinds sparse,dense]
                                       [--aggregators mean,median] [--attacks none,sign_flip]
                                       [--devices 100 --per-round 20] [--local-steps 4]

Every cell is one ``scripts/fit.py`` call: Fashion-MNIST, 16 iid devices (or ``--devices``, of which
``--per-round`` are sampled each round: FedAvg rounds of one step), LeNet-300-100, batch 64,
``--max-rounds`` the budget, seed 0, 20 % attackers (3 of 16, drawn from the seed), ``--local-steps``
H a round (1: a device sends one gradient; H > 1: its model's change after H steps); ``sparse`` is
Algorithm 1 with the server's mask check (``--share-log-sigma2 --enforce-mask``), ``dense`` the
dense baseline. A cell whose run folder holds a ``summary.json`` is not run again; one with a
checkpoint is resumed. The script writes every finished cell into ``results/robustness_N.json``
(N devices; ``results/robustness_N_K.json`` with K a round, ``..._hH.json`` with H > 1 local steps)
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

from lightning_fed.federation.aggregators import make_aggregator  # noqa: E402
from lightning_fed.federation.attacks import make_attack  # noqa: E402
from lightning_fed.runs.cli import HelpFormatter, OneLineParser  # noqa: E402
from lightning_fed.runs.summary import has_summary, read_summary  # noqa: E402

BASE = [
    "--dataset", "fashion-mnist", "--network", "lenet300_100", "--batch-size", "64", "--val-size", "5000",
    "--seed", "0", "--wandb-mode", "disabled",
]  # fmt: skip
KINDS = {"sparse": ["--share-log-sigma2", "--enforce-mask"], "dense": ["--dense"]}
AGGREGATORS = ["mean", "median", "trimmed_mean:0.25", "krum:3", "multi_krum:3:10", "bulyan:3"]
ATTACKS = ["none", "sign_flip", "scale:10", "scale:-10", "gaussian:1", "label_flip", "alie", "ipm:0.1"]
FRACTION = "0.2"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())


def setting_name(devices: int, per_round: int | None, local_steps: int = 1) -> str:
    """``16``, ``100_20`` for 20 of 100 devices a round, ``100_20_h4`` with 4 local steps: the
    results file's and folders' name.

    Example::

        >>> setting_name(16, None), setting_name(100, 20), setting_name(100, 20, 4)
        ('16', '100_20', '100_20_h4')
    """
    name = str(devices) if per_round is None else f"{devices}_{per_round}"
    return name if local_steps == 1 else f"{name}_h{local_steps}"


def command_of(
    kind: str, aggregator: str, attack: str, rounds: int, runs: Path, devices: int = 16, per_round=None,
    local_steps: int = 1,
) -> list[str]:  # fmt: skip
    attacked = [] if attack == "none" else ["--attack", attack, "--malicious-fraction", FRACTION]
    sampled = [] if per_round is None else ["--devices-per-round", str(per_round)]
    local = [] if local_steps == 1 else ["--local-steps", str(local_steps)]
    name = setting_name(devices, per_round, local_steps)
    folder = runs / f"{rounds}r" if name == "16" else runs / name / f"{rounds}r"
    output = folder / kind / f"{slug(aggregator)}__{slug(attack)}"
    return [
        "scripts/fit.py", *BASE, "--devices", str(devices), *sampled, *local, *KINDS[kind],
        "--max-rounds", str(rounds), "--aggregator", aggregator, *attacked, "--output-dir", str(output),
    ]  # fmt: skip


def run(
    kind: str,
    aggregator: str,
    attack: str,
    rounds: int,
    runs: Path,
    devices=16,
    per_round=None,
    local_steps=1,
) -> dict:
    """The cell's summary, after running it unless its folder holds one."""
    shown, command = (
        command_of(kind, aggregator, attack, rounds, r, devices, per_round, local_steps)
        for r in (runs, runs.expanduser())
    )
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
    attacks = list(dict.fromkeys([*(a for a in ATTACKS if any(c["attack"] == a for c in cells)),
                                  *(c["attack"] for c in cells)]))  # fmt: skip
    rows = list(dict.fromkeys((c["kind"], c["aggregator"]) for c in cells))
    found = {(c["kind"], c["aggregator"], c["attack"]): c["test_acc"] for c in cells}
    lines = ["| kind | aggregator | " + " | ".join(attacks) + " |", "|---" * (2 + len(attacks)) + "|"]
    for kind, aggregator in rows:
        values = [found.get((kind, aggregator, a)) for a in attacks]
        shown = ["-" if v is None else f"{100 * v:.1f}" for v in values]
        lines.append(f"| {kind} | {aggregator} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def _names(value: str, check, option: str, parser) -> list[str]:
    """The comma-separated specs of ``value``, each passed through ``check`` (a one-line error)."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        parser.error(f"{option}: give at least one, got {value!r}")
    for name in names:
        try:
            check(name)
        except ValueError as error:
            parser.error(f"{option}: {error}")
    return names


def _known_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")


def main(argv=None) -> None:
    parser = OneLineParser(prog="robustness_table.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=int, default=60, help="the budget of every cell, in rounds")
    parser.add_argument("--runs-dir", type=Path, default=Path("~/lf-runs/robust"))
    parser.add_argument("--kinds", default="sparse", help=f"of {','.join(KINDS)}")
    parser.add_argument("--aggregators", default=",".join(AGGREGATORS), help="aggregator specs, by commas")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="attack specs (or none), by commas")
    parser.add_argument("--devices", type=int, default=16, help="N devices")
    parser.add_argument("--per-round", type=int, default=None, help="K sampled a round (default: all)")
    parser.add_argument("--local-steps", type=int, default=1, help="H local steps a round (1: one gradient)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give a budget of at least 1 round")
    if args.devices < 1 or (args.per_round is not None and not 1 <= args.per_round <= args.devices):
        parser.error(f"--devices {args.devices} --per-round {args.per_round}: give 1 <= K <= N")
    if args.local_steps < 1:
        parser.error(f"--local-steps {args.local_steps}: give at least 1 step a round")
    kinds = _names(args.kinds, _known_kind, "--kinds", parser)
    aggregators = _names(args.aggregators, make_aggregator, "--aggregators", parser)
    attacks = _names(args.attacks, lambda a: a == "none" or make_attack(a, []), "--attacks", parser)
    out = ROOT / "results" / f"robustness_{setting_name(args.devices, args.per_round, args.local_steps)}.json"
    cells = json.loads(out.read_text()) if out.exists() else []
    for kind in kinds:
        for aggregator in aggregators:
            for attack in attacks:
                cell = run(
                    kind, aggregator, attack, args.rounds, args.runs_dir, args.devices, args.per_round,
                    args.local_steps,
                )  # fmt: skip
                key = (cell["kind"], cell["aggregator"], cell["attack"], cell["rounds"])
                cells = [c for c in cells if (c["kind"], c["aggregator"], c["attack"], c["rounds"]) != key]
                cells.append(cell)
                out.write_text(json.dumps(cells, indent=1) + "\n")
    print(table([c for c in cells if c["rounds"] == args.rounds]))
    print(f"\nA cell's command: {cells[-1]['command']}")


if __name__ == "__main__":
    main()
