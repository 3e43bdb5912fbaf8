"""scripts/compare_codecs.py: each method is a fit.py command that parses; the table reads summaries."""

import pytest

from scripts.compare_codecs import METHODS, command_of, slug, table
from scripts.fit import parse_args


def test_every_method_is_a_fit_py_command_that_parses_into_its_own_folder(tmp_path):
    folders = set()
    for name in METHODS:
        command = command_of(name, 2, tmp_path)
        args = parse_args(command[1:])
        assert args.max_epochs == 2 and args.devices == 16
        folders.add(args.output_dir)
    assert len(folders) == len(METHODS) == len({slug(n) for n in METHODS})


def test_the_table_charges_every_method_against_dense_sgd_over_the_same_budget():
    dense = {
        "method": "dense", "command": "c0", "test_acc": 0.9, "kept_fraction": 1.0, "comm_dense_bytes": 10_000,
        "comm_wire_bytes": 6_000, "comm_paper_bytes": 5_800, "steps": 54, "wall_seconds": 600,
    }  # fmt: skip
    fedavg = {**dense, "method": "fedavg", "command": "c1", "steps": 12, "comm_dense_bytes": 2_222}
    fedavg.update(comm_wire_bytes=123, comm_paper_bytes=200)
    lines = table([dense, fedavg]).splitlines()
    assert (
        len(lines) == 4
        and lines[2] == "| dense | 90.00 % | 100.00 % | 60.00 % | 58.00 % | 54 | 10 min | `c0` |"
    )
    assert (
        lines[3] == "| fedavg | 90.00 % | 100.00 % | 1.23 % | 2.00 % | 12 | 10 min | `c1` |"
    )  # of dense's 54


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "gzip"], "--only: unknown methods ['gzip']"),
        (["--epochs", "0"], "--epochs 0: give an epoch budget of at least 1"),
    ],
)
def test_bad_input_is_a_one_line_error_that_runs_nothing(tmp_path, capsys, args, message):
    from scripts.compare_codecs import main

    with pytest.raises(SystemExit) as exit_:
        main([*args, "--runs-dir", str(tmp_path / "runs")])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and f"compare_codecs.py: error: {message}" in error
    assert len(error.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
