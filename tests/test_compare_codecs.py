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


def test_the_table_has_a_row_per_method_with_its_percentages():
    row = {
        "method": "m", "command": "python scripts/fit.py", "test_acc": 0.9, "kept_fraction": 0.05,
        "comm_wire_fraction": 0.0123, "comm_paper_fraction": 0.02, "wall_seconds": 600,
    }  # fmt: skip
    lines = table([row]).splitlines()
    assert (
        len(lines) == 3
        and lines[2] == "| m | 90.00 % | 5.00 % | 1.23 % | 2.00 % | 10 min | `python scripts/fit.py` |"
    )


def test_an_unknown_method_is_a_one_line_error(capsys):
    from scripts.compare_codecs import main

    with pytest.raises(SystemExit) as exit_:
        main(["--only", "gzip"])
    assert exit_.value.code == 2 and "--only: unknown methods ['gzip']" in capsys.readouterr().err
