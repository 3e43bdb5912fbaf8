"""A seeded sample of the core's mutants run against the quick suite, and its score, in one call.

    python scripts/mutation_sample.py --sample 20 --seed 0 --minutes 15 --equivalent mutmut_equivalent.txt

It composes three steps (docs/testing.md): mutmut generates every mutant of ``[tool.mutmut]`` and
records which quick tests reach which function (``mutmut run`` with a name that matches no mutant:
mutmut stops after that, saying so); ``scripts/mutation_score.py --sample N --seed S`` draws the
sample (written to ``mutants/sample_S_N.txt``); ``mutmut run`` runs those mutants until the
``--minutes`` of the whole call are spent (then it is stopped, and the mutants it did not reach are
reported as not run); then ``mutation_score.py --names`` prints their score and survivors. Each
step's time is printed.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTHING = "no_mutant_is_named_this*"  # mutmut generates and records, then finds nothing to run


def _took(label: str, start: float, note: str = "") -> None:
    """One line of a step's time: ``mutation_sample.py: LABEL: N s[NOTE]``."""
    print(f"mutation_sample.py: {label}: {time.monotonic() - start:.0f} s{note}", flush=True)


def _run_within(command: list[str], seconds: float) -> bool:
    """Run ``command`` (its own process group: mutmut's workers too) for at most ``seconds``; True
    if it finished, False if it was stopped."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=max(seconds, 1))
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mutation_sample.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=20, help="mutants to draw (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--equivalent", type=Path, help="a file of equivalent mutants' names")
    parser.add_argument("--minutes", type=float, default=15.0, help="the whole call's budget (default: 15)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes < float("inf"):
        parser.exit(
            2, f"mutation_sample.py: error: --minutes {args.minutes:g}: give a number of minutes > 0\n"
        )
    if args.sample < 1:
        parser.exit(2, f"mutation_sample.py: error: --sample {args.sample}: give a whole number >= 1\n")
    if args.equivalent is not None and not args.equivalent.is_file():
        parser.exit(2, f"mutation_sample.py: error: --equivalent {args.equivalent} is not a file\n")
    deadline = time.monotonic() + 60 * args.minutes
    python, score = sys.executable, str(ROOT / "scripts" / "mutation_score.py")
    start = time.monotonic()
    generated = subprocess.run(
        [python, "-m", "mutmut", "run", NOTHING], cwd=ROOT, text=True, capture_output=True
    )
    _took("generate and record", start)
    if "nothing matches" not in generated.stdout + generated.stderr:
        print((generated.stdout + generated.stderr)[-3000:], file=sys.stderr)
        return generated.returncode or 1
    names = ROOT / "mutants" / f"sample_{args.seed}_{args.sample}.txt"
    drawn = subprocess.run(
        [python, score, "--sample", str(args.sample), "--seed", str(args.seed)],
        cwd=ROOT, text=True, capture_output=True, check=True,
    )  # fmt: skip
    names.write_text(drawn.stdout)
    start = time.monotonic()
    finished = _run_within([python, "-m", "mutmut", "run", *drawn.stdout.split()], deadline - start)
    _took("run the sample", start, "" if finished else ", stopped at the budget")
    report = [python, score, "--names", str(names)]
    if args.equivalent is not None:
        report += ["--equivalent", str(args.equivalent.resolve())]
    return subprocess.run(report, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
