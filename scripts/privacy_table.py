"""Client-level DP at 1,000 devices: dense DP-FedAvg and sparse Algorithm 1 at the same epsilon, clip
and rounds, with the non-private runs as the ceiling.

Usage:
    python scripts/privacy_table.py [--rounds 300] [--clip 1.0] [--epsilons none,8,3,1]
                                    [--kinds dense,sparse] [--runs-dir ~/lf-runs/dp]

Every cell is one ``scripts/fit.py`` call: Fashion-MNIST, 1,000 iid devices, 50 a round by Poisson
sampling, one local epoch of batch 32 (the module's Adam, fresh each round), LeNet-300-100, the
rounds given, delta 1e-5; ``dense`` is the dense baseline, ``sparse`` Algorithm 1 (the public mask:
noise on the kept weights only) with the KL weight held at 0 for 20 rounds, then ramped to 1 over
20. A private cell's sigma is calibrated by fit.py so that its rounds spend the target epsilon
(``--target-epsilon``). A cell whose run folder holds a ``summary.json`` is not run again; one
with a checkpoint is resumed. The script writes the finished cells into ``results/dp_1000.json``,
the plot of validation accuracy against epsilon spent into
``results/dp_1000_accuracy_against_epsilon.png``, and prints the markdown table of RESULTS.md.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lightning_fed.runs.cli import HelpFormatter, OneLineParser  # noqa: E402
from lightning_fed.runs.epoch_log import read_epochs  # noqa: E402
from lightning_fed.runs.plots import plot_accuracy_against_epsilon  # noqa: E402
from lightning_fed.runs.summary import has_summary, read_summary  # noqa: E402

BASE = [
    "--devices", "1000", "--devices-per-round", "50", "--sampling", "poisson", "--local-epochs", "1",
    "--batch-size", "32", "--network", "lenet300_100", "--wandb-mode", "disabled",
    "--log-every-n-steps", "10",
]  # fmt: skip
KINDS = {
    "dense": ["--dense"],
    "sparse": ["--share-log-sigma2", "--kl-delay-epochs", "1", "--kl-warmup-epochs", "1"],
}
EPSILONS = ["none", "8", "3", "1"]
OUT = ROOT / "results" / "dp_1000.json"


def command_of(kind: str, epsilon: str, rounds: int, clip: float, runs: Path) -> list[str]:
    private = [] if epsilon == "none" else ["--dp-clip", f"{clip:g}", "--target-epsilon", epsilon]
    epochs = str(max(1, -(-rounds // 20)))  # 20 rounds an epoch here: N * L / (K * H) = 1000 * 2 / (50 * 2)
    output = runs / f"{rounds}r" / f"{kind}_eps{epsilon}"
    return [
        "scripts/fit.py", *BASE, *KINDS[kind], "--max-epochs", epochs, "--max-rounds", str(rounds), *private,
        "--output-dir", str(output),
    ]  # fmt: skip


def run(kind: str, epsilon: str, rounds: int, clip: float, runs: Path) -> dict:
    """The cell's figures, after running it unless its folder holds a summary."""
    shown, command = (command_of(kind, epsilon, rounds, clip, r) for r in (runs, runs.expanduser()))
    output = Path(command[-1])
    if not has_summary(output):
        resume = ["--resume", "last"] if (output / "checkpoints" / "last.ckpt").exists() else []
        print(f"privacy_table.py: {shlex.join(['python', *command, *resume])}", flush=True)
        subprocess.run([sys.executable, *command, *resume], cwd=ROOT, check=True)
    summary = read_summary(output)
    return {
        "kind": kind, "target_epsilon": epsilon, "rounds": rounds,
        "clip": None if epsilon == "none" else clip,
        "test_acc": summary["test_acc"], "kept_fraction": summary["kept_fraction"],
        "epsilon": summary.get("dp_epsilon"), "noise_multiplier": summary.get("dp_noise_multiplier"),
        "wire_fraction": summary["comm_wire_fraction"], "wire_bytes": summary["comm_wire_bytes"],
        "train_seconds": summary["train_seconds"], "command": " ".join(["python", *shown]),
        "epochs": {str(e): v for e, v in read_epochs(output).items()},
    }  # fmt: skip


def table(cells: list[dict]) -> str:
    """One row a cell: kind, target epsilon, sigma, epsilon spent, test top-1, kept, traffic.

    Example::

        >>> print(table([{"kind": "dense", "target_epsilon": "none", "noise_multiplier": None,
        ...               "epsilon": None, "test_acc": 0.85, "kept_fraction": 1.0, "wire_fraction": 1.0,
        ...               "wire_bytes": 2**30}]))
        | kind | target epsilon | sigma | epsilon spent | test top-1 | kept | wire bytes, % of dense (GiB) |
        |---|---|---|---|---|---|---|
        | dense | none | - | - | 85.00 % | 100.00 % | 100.0 (1.00) |
    """
    head = (
        "| kind | target epsilon | sigma | epsilon spent | test top-1 | kept | wire bytes, % of dense (GiB) |"
    )
    lines = [head, "|---" * 7 + "|"]
    for c in cells:
        sigma = "-" if c["noise_multiplier"] is None else f"{c['noise_multiplier']:.3f}"
        spent = "-" if c["epsilon"] is None else f"{c['epsilon']:.3f}"
        traffic = f"{100 * c['wire_fraction']:.1f} ({c['wire_bytes'] / 2**30:.2f})"
        lines.append(
            f"| {c['kind']} | {c['target_epsilon']} | {sigma} | {spent} | {100 * c['test_acc']:.2f} % | "
            f"{100 * c['kept_fraction']:.2f} % | {traffic} |"
        )
    return "\n".join(lines)


def plot(cells: list[dict], path: Path) -> Path:
    """Validation accuracy against epsilon spent, a line per private cell; the non-private ones'
    last validation accuracy as the ceilings."""
    runs, ceilings = {}, {}
    for c in cells:
        epochs = {int(e): v for e, v in c["epochs"].items()}
        if c["target_epsilon"] == "none":
            last = [v["val/acc"] for _, v in sorted(epochs.items()) if "val/acc" in v]
            if last:
                ceilings[f"{c['kind']}, non-private"] = last[-1]
        else:
            runs[f"{c['kind']}, target {c['target_epsilon']}"] = epochs
    return plot_accuracy_against_epsilon(runs, path, ceilings)


def _names(value: str, allowed: list[str], option: str, parser) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if not names or unknown:
        parser.error(f"{option} {value!r}: give some of {','.join(allowed)}")
    return names


def main(argv=None) -> None:
    parser = OneLineParser(prog="privacy_table.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=int, default=300, help="the rounds of every cell")
    parser.add_argument("--clip", type=float, default=1.0, help="C, the same for every private cell")
    parser.add_argument("--epsilons", default=",".join(EPSILONS), help="targets (none: non-private)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {','.join(KINDS)}")
    parser.add_argument("--runs-dir", type=Path, default=Path("~/lf-runs/dp"))
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give at least 1 round")
    if not 0 < args.clip < float("inf"):
        parser.error(f"--clip {args.clip}: give a finite number > 0")
    kinds = _names(args.kinds, list(KINDS), "--kinds", parser)
    epsilons = _names(args.epsilons, EPSILONS, "--epsilons", parser)
    cells = json.loads(OUT.read_text()) if OUT.exists() else []
    for kind in kinds:
        for epsilon in epsilons:
            cell = run(kind, epsilon, args.rounds, args.clip, args.runs_dir)
            key = (kind, epsilon, args.rounds)
            cells = [c for c in cells if (c["kind"], c["target_epsilon"], c["rounds"]) != key] + [cell]
            OUT.write_text(json.dumps(cells, indent=1) + "\n")
    shown = [c for c in cells if c["rounds"] == args.rounds]
    plot(shown, OUT.with_name("dp_1000_accuracy_against_epsilon.png"))
    print(table(shown))
    print(f"\nA cell's command: {shown[-1]['command']}")


if __name__ == "__main__":
    main()
