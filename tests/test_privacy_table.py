"""scripts/privacy_table.py: every cell is a fit.py command that parses into its own folder, private
cells with the same clip and their own target; bad options are one line; the table reads the cells."""

import pytest

from scripts.fit import parse_args
from scripts.privacy_table import EPSILONS, KINDS, command_of, main, table


def test_every_cell_is_a_fit_py_command_with_the_same_clip_rounds_and_sampling(tmp_path):
    folders = set()
    for kind in KINDS:
        for epsilon in EPSILONS:
            args = parse_args(command_of(kind, epsilon, 300, 0.5, tmp_path)[1:])
            assert (args.devices, args.devices_per_round, args.sampling) == (1000, 50, "poisson")
            assert (args.max_rounds, args.max_epochs) == (300, 15)  # 20 rounds an epoch
            assert args.dense == (kind == "dense") and args.share_log_sigma2 == (kind == "sparse")
            if epsilon == "none":
                assert (args.dp_clip, args.target_epsilon) == (None, None)
            else:
                assert (args.dp_clip, args.target_epsilon, args.dp_delta) == (0.5, float(epsilon), 1e-5)
            folders.add(args.output_dir)
    assert len(folders) == len(KINDS) * len(EPSILONS)


def test_the_table_shows_sigma_and_epsilon_only_for_private_cells():
    cells = [
        {"kind": "dense", "target_epsilon": "none", "noise_multiplier": None, "epsilon": None,
         "test_acc": 0.8569, "kept_fraction": 1.0, "wire_fraction": 0.9987, "wire_bytes": 3 * 2**30},
        {"kind": "sparse", "target_epsilon": "3", "noise_multiplier": 1.2345, "epsilon": 2.9991,
         "test_acc": 0.7, "kept_fraction": 0.05, "wire_fraction": 1.5, "wire_bytes": 2**29},
    ]  # fmt: skip
    assert table(cells).splitlines()[2:] == [
        "| dense | none | - | - | 85.69 % | 100.00 % | 99.9 (3.00) |",
        "| sparse | 3 | 1.234 | 2.999 | 70.00 % | 5.00 % | 150.0 (0.50) |",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kinds", "both"], "--kinds 'both': give some of dense,sparse"),
        (["--epsilons", "2"], "--epsilons '2': give some of none,8,3,1"),
        (["--rounds", "0"], "--rounds 0: give at least 1 round"),
        (["--clip", "-1"], "--clip -1.0: give a finite number > 0"),
    ],
)
def test_bad_options_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and message in lines[0], lines
