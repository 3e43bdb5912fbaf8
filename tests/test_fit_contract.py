"""fit.py's user contract in the quick suite: every bad input of tests/test_fit_cli.py's table exits 2
with one line naming the option, and touches nothing already in the output folder.

The rows run in this process (``scripts.fit.main``), so they take a second, not a fresh interpreter
each; tests/test_fit_cli.py runs the same table as users do, one process a row (slow suite).
"""

import os
import random
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_fit_cli import BAD_INPUT, BASE, _snapshot

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # fit.py imports its sibling fit_run as a script does

from fit import main  # noqa: E402

# A row whose answer depends on this machine's hardware runs only in the subprocess table, where
# CUDA is hidden from fit.py; here it would differ on a GPU machine.
MACHINE_DEPENDENT = {"--accelerator"}
ROWS = [row for row in BAD_INPUT if not MACHINE_DEPENDENT & set(row[0])]


@contextmanager
def _process_state_kept():
    """fit.py seeds every generator and sets PL_GLOBAL_SEED; the tests after these keep theirs."""
    environment, states = dict(os.environ), (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environment)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def test_the_quick_table_is_the_whole_table_but_the_machine_s_rows():
    assert len(ROWS) == len(BAD_INPUT) - 1 and len(ROWS) >= 45


@pytest.mark.parametrize(("args", "message"), ROWS)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    args, message, run_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the table's relative paths ('.', absent.pt) are the user's folder
    before = _snapshot(run_dir)
    argv = [*BASE, "--output-dir", str(run_dir)]
    if "--devices" in args:
        argv = [a for a in argv if a not in ("--devices", "2")]
    with _process_state_kept():
        try:
            code = main([*argv, *args])
        except SystemExit as stop:  # argparse's errors
            code = stop.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert _snapshot(run_dir) == before


def test_a_resume_with_another_trajectory_option_is_one_line_exit_2_and_touches_nothing(
    tmp_path, monkeypatch, capsys
):
    """fit.py makes the strategy's own check (FederationConfig's trajectory) before it starts anything."""
    output = tmp_path / "run"
    argv = [*BASE, "--output-dir", str(output), "--max-rounds", "1", "--limit-val-batches", "1"]
    with _process_state_kept():
        assert main([*argv, "--network", "lenet300_100"]) == 0
    capsys.readouterr()
    before = _snapshot(output)
    for change, said in (
        (["--seed", "5"], "with --seed 0, not 5"),
        (["--local-steps", "2"], "with --local-steps 1, not 2"),
        (["--codec", "qsgd:8"], r"with --codec \(none\), not qsgd:8"),
    ):
        with _process_state_kept():
            code = main(
                [*argv, "--network", "lenet300_100", "--resume", "last", "--max-rounds", "2", *change]
            )
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1, lines
        assert re.search(rf"^fit.py: error: checkpoint \S+last.ckpt was trained {said}; resume it", lines[0])
        assert _snapshot(output) == before
