"""scripts/robustness_table.py: every cell is a fit.py command that parses into its own folder; bad
options are one line; the table reads the cells."""

import pytest

from scripts.fit import parse_args
from scripts.robustness_table import AGGREGATORS, ATTACKS, command_of, main, table


@pytest.mark.parametrize("devices, per_round, local_steps", [(16, None, 1), (100, 20, 1), (100, 20, 4)])
def test_every_cell_is_a_fit_py_command_that_parses_into_its_own_folder(
    tmp_path, devices, per_round, local_steps
):
    folders = set()
    for aggregator in AGGREGATORS:
        for attack in ATTACKS:
            command = command_of("sparse", aggregator, attack, 54, tmp_path, devices, per_round, local_steps)
            args = parse_args(command[1:])
            assert (args.devices, args.devices_per_round, args.max_rounds) == (devices, per_round, 54)
            assert args.local_steps == (None if local_steps == 1 else local_steps)
            assert args.aggregator == aggregator and args.enforce_mask and args.share_log_sigma2
            assert (args.attack, args.malicious_fraction) == (
                (None, 0.0) if attack == "none" else (attack, 0.2)
            )
            folders.add(args.output_dir)
    assert len(folders) == len(AGGREGATORS) * len(ATTACKS)
    setting = {(16, None, 1): "54r", (100, 20, 1): "100_20/54r", (100, 20, 4): "100_20_h4/54r"}
    assert all(
        str(folder).startswith(str(tmp_path / setting[devices, per_round, local_steps])) for folder in folders
    )


def test_the_table_has_a_row_per_kind_and_aggregator_and_a_dash_where_a_cell_is_missing():
    cells = [
        {"kind": "sparse", "aggregator": "mean", "attack": "none", "test_acc": 0.775},
        {"kind": "sparse", "aggregator": "mean", "attack": "scale:-10", "test_acc": 0.089},
        {"kind": "sparse", "aggregator": "median", "attack": "none", "test_acc": 0.774},
    ]
    assert table(cells).splitlines()[2:] == [
        "| sparse | mean | 77.5 | 8.9 |",
        "| sparse | median | 77.4 | - |",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--aggregators", "krum:x"],
            "--aggregators: aggregator 'krum:x': 'krum:x' has a value that is not a number",
        ),
        (["--attacks", "flip"], "--attacks: attack 'flip': unknown or malformed"),
        (["--kinds", "both"], "--kinds: unknown kind 'both'; kinds are sparse, dense"),
        (["--devices", "10", "--per-round", "20"], "--devices 10 --per-round 20: give 1 <= K <= N"),
        (["--rounds", "0"], "--rounds 0: give a budget of at least 1 round"),
        (["--local-steps", "0"], "--local-steps 0: give at least 1 step a round"),
    ],
)
def test_bad_options_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and message in lines[0], lines
