"""The mutation score of what mutmut has run, per file, and a seeded sample of mutants to run next.

mutmut (``[tool.mutmut]`` in pyproject.toml) writes each mutated file's results beside it,
``mutants/PATH.meta`` (``exit_code_by_key``: mutant name -> the test run's exit code). This
script reads them: per file, the mutants killed (a test failed), timed out (over their CPU-time
limit: killed for mutmut), survived, not covered by a quick test, and not run yet; the score is
(killed + timed out) / (killed + timed out + survived), the strict score counts the mutants no
quick test reaches as survivors too; with
``--equivalent FILE`` (one mutant name a line, ``#`` comments: mutants that cannot change
behaviour, each with its reason) those leave the denominator. ``--sample N --seed S`` prints N
mutant names drawn without replacement by the seed, for ``python -m mutmut run NAMES`` (docs/testing.md).

    python -m mutmut run "lightning_fed.federation.aggregation*"
    python scripts/mutation_score.py lightning_fed/federation/aggregation.py
    python -m mutmut run $(python scripts/mutation_score.py --sample 40 --seed 0)
"""

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3}  # a failing test, pytest's internal error
TIMED_OUT = {24, -24, 36, 152, 255}  # over its CPU-time limit (mutmut counts it as killed)
SURVIVED = {0}
NO_TESTS = {5, 33}


def status(exit_code: int | None) -> str:
    """What mutmut's exit code of a mutant's test run means.

    Example::

        >>> [status(c) for c in (1, 0, 33, None, -24)]
        ['killed', 'survived', 'no tests', 'not run', 'timed out']
    """
    if exit_code is None:
        return "not run"
    if exit_code in KILLED:
        return "killed"
    if exit_code in TIMED_OUT:
        return "timed out"
    if exit_code in SURVIVED:
        return "survived"
    return "no tests" if exit_code in NO_TESTS else "other"


def results(root: Path, files: list[str], names: set[str] | None = None) -> dict[str, dict[str, int | None]]:
    """``{source file: {mutant: exit code}}`` from ``root``'s ``.meta`` files (``files``: only those;
    ``names``: only those mutants)."""
    found = {}
    for meta in sorted(root.rglob("*.py.meta")):
        source = meta.relative_to(root).as_posix()[: -len(".meta")]
        if not files or source in files:
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            found[source] = {k: v for k, v in codes.items() if names is None or k in names}
    return {source: codes for source, codes in found.items() if codes or names is None}


def score(counts: Counter) -> float | None:
    """Killed (a test failed, or it timed out) over those and the survivors (None when none).

    Example::

        >>> score(Counter(killed=15, survived=3, **{"timed out": 2, "no tests": 5}))
        0.85
    """
    caught = counts["killed"] + counts["timed out"]
    return caught / (caught + counts["survived"]) if caught + counts["survived"] else None


def strict_score(counts: Counter) -> float | None:
    """The same with the mutants no quick test reaches counted as survivors: what the quick suite
    catches of every non-equivalent mutant run.

    Example::

        >>> strict_score(Counter(killed=15, survived=3, **{"timed out": 2, "no tests": 5}))
        0.68
    """
    caught = counts["killed"] + counts["timed out"]
    missed = counts["survived"] + counts["no tests"]
    return caught / (caught + missed) if caught + missed else None


def equivalent_names(path: Path | None) -> set[str]:
    """The mutant names listed in ``path`` (the first word of each line; ``#`` starts a comment)."""
    if path is None:
        return set()
    lines = (line.split("#", 1)[0].split() for line in path.read_text().splitlines())
    return {words[0] for words in lines if words}


def report(found: dict, equivalent: set[str]) -> list[str]:
    """One line per file and one for all, then the survivors by name."""
    lines, everything, survivors = [], Counter(), []
    for source, codes in found.items():
        counts = Counter(status(code) for name, code in codes.items() if name not in equivalent)
        counts["equivalent"] = sum(name in equivalent for name in codes)
        everything.update(counts)
        survivors += [
            name for name, code in codes.items() if status(code) == "survived" and name not in equivalent
        ]
        lines.append(_line(source, counts))
    lines.append(_line("all", everything))
    return lines + [f"survived: {name}" for name in survivors]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _line(label: str, counts: Counter) -> str:
    kinds = ("killed", "timed out", "survived", "no tests", "not run", "equivalent")
    parts = ", ".join(f"{counts[k]} {k}" for k in kinds)
    return f"{label}: score {_percent(score(counts))}, strict {_percent(strict_score(counts))} ({parts})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mutation_score.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="source files to report (default: every mutated file)")
    parser.add_argument("--mutants", default="mutants", help="mutmut's folder (default: mutants)")
    parser.add_argument("--equivalent", type=Path, help="a file of equivalent mutants' names")
    parser.add_argument("--sample", type=int, help="print this many mutant names, drawn by --seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names", type=Path, help="report only the mutants named in this file")
    args = parser.parse_args(argv)
    root = Path(args.mutants)
    if not root.is_dir():
        parser.exit(
            2, f"mutation_score.py: error: --mutants {root} is not a folder: run python -m mutmut run\n"
        )
    if args.sample is not None and args.sample < 1:
        parser.exit(2, f"mutation_score.py: error: --sample {args.sample}: give a whole number >= 1\n")
    if args.names is not None and not args.names.is_file():
        parser.exit(2, f"mutation_score.py: error: --names {args.names} is not a file\n")
    found = results(root, args.files, set(args.names.read_text().split()) if args.names else None)
    if args.sample is not None:
        names = sorted(name for codes in found.values() for name in codes)
        chosen = random.Random(args.seed).sample(names, min(args.sample, len(names)))
        print(" ".join(chosen))
        return 0
    print("\n".join(report(found, equivalent_names(args.equivalent))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
