"""The benchmark scripts refuse bad options with one line naming the option, before anything runs."""

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("benchmark", ["--devices", "0"], "argument --devices: 0 is not allowed (must be an integer >= 1)"),
        ("benchmark", ["--batch-size", "x"], "argument --batch-size: 'x' is not an integer (must be >= 1)"),
        ("benchmark", ["--steps", "5", "3"], "--steps: need 1 <= K1 < K2, got 5 3"),
        ("benchmark", ["--steps", "0", "3"], "argument --steps: 0 is not allowed (must be an integer >= 1)"),
        (
            "benchmark",
            ["--val-size", "-1"],
            "argument --val-size: -1 is not allowed (must be an integer >= 0)",
        ),
        ("benchmark", ["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (
            "benchmark_layers",
            ["--threads", "0"],
            "argument --threads: 0 is not allowed (must be an integer >= 1)",
        ),
        (
            "benchmark_layers",
            ["--rounds", "0"],
            "argument --rounds: 0 is not allowed (must be an integer >= 1)",
        ),
        (
            "benchmark_layers",
            ["--recurrent-noise", "sequence"],
            "--recurrent-noise sequence applies to char_lstm and char_lstm_small",
        ),
        (
            "benchmark_data_memory",
            ["--devices", "0"],
            "argument --devices: 0 is not allowed (must be an integer >= 1)",
        ),
        (
            "benchmark_federation",
            ["--steps", "3"],
            "argument --steps: 3 is not allowed (must be an integer >= 4)",
        ),
        (
            "benchmark_federation",
            ["--layouts", "1,3,plain"],
            "--layouts 1,3,plain: '3' not allowed; give 'plain' or process counts P with 1 <= P <= "
            "--devices (16)",
        ),
        (
            "benchmark_federation",
            ["--devices", "4", "--layouts", "8,plain"],
            "--layouts 8,plain: '8' not allowed; give 'plain' or process counts P with 1 <= P <= "
            "--devices (4)",
        ),
        (
            "benchmark_scale",
            ["--devices", "1000,x"],
            "argument --devices: '1000,x' is not whole numbers separated by commas (e.g. 10,50)",
        ),
        (
            "benchmark_scale",
            ["--devices", "1000,20"],
            "--devices 1000,20: every N must be at least --per-round 50",
        ),
        (
            "benchmark_secagg",
            ["--per-round", "2,50"],
            "--per-round 2,50: a secure round needs at least 3 devices",
        ),
        (
            "benchmark_secagg",
            ["--per-round", "10,x"],
            "argument --per-round: '10,x' is not whole numbers separated by commas (e.g. 10,50)",
        ),
        ("benchmark_secagg", ["--kept", "0"], "--kept 0.0: give a fraction in (0, 1]"),
        (
            "benchmark_secagg",
            ["--flower-python", "/nowhere/python"],
            "--flower-python /nowhere/python: it cannot import flwr (give the python of a venv with flwr)",
        ),
        (
            "benchmark_secagg",
            ["--flower-python", sys.executable],  # the project's own: it never has flwr
            f"--flower-python {sys.executable}: it cannot import flwr",
        ),
        ("benchmark_scale", ["--forms", "alg1,fedavg"], "--forms 'alg1,fedavg': 'fedavg' is not one of alg1"),
        (
            "benchmark_scale",
            ["--rounds", "0"],
            "argument --rounds: 0 is not allowed (must be an integer >= 1)",
        ),
    ],
)
def test_a_bad_option_is_one_line_naming_it_and_writes_nothing(script, args, message, tmp_path, capsys):
    main = importlib.import_module(f"scripts.{script}").main
    extra = ["--json", str(tmp_path / "out.json")] if script == "benchmark" else []
    with pytest.raises(SystemExit) as stop:
        main([*args, *extra])
    out = capsys.readouterr()
    assert stop.value.code == 2 and out.out == ""
    assert out.err.startswith(f"{script}.py: error: {message}") and out.err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_the_scale_table_gives_each_form_s_seconds_against_its_smallest_n():
    from scripts.benchmark_scale import table

    row = {"setup_seconds": 3.0, "peak_rss_gib": 1.5, "disk_bytes": 2**20}
    rows = [
        {**row, "form": "alg1", "devices": 1000, "round_seconds": 2.0},
        {**row, "form": "alg1", "devices": 50000, "round_seconds": 3.0},
        {**row, "form": "variant", "devices": 1000, "round_seconds": 4.0},
        {**row, "form": "variant", "devices": 50000, "round_seconds": 2.0},
    ]
    lines = table(rows).splitlines()[2:]
    assert [line.split(" | ")[3] for line in lines] == ["1.00x", "1.50x", "1.00x", "0.50x"]
    assert lines[1] == "| alg1 | 50,000 | 3.00 | 1.50x | 3 | 1.50 GiB | 1 MiB |"


def test_the_secagg_table_sets_flower_s_added_seconds_and_bytes_beside_ours():
    from scripts.benchmark_secagg import flower_table

    row = {
        "per_round": 50, "form": "sparse", "plain_seconds": 0.5, "secure_seconds": 1.5,
        "secure_upload_bytes": 2**20, "flower_plain_seconds": 2.0, "flower_secure_seconds": 6.5,
        "flower_plain_upload_bytes": 2**21, "flower_secure_upload_bytes": 3 * 2**21,
        "flower_secure_extra_download_bytes": 5 * 2**10,
    }  # fmt: skip
    line = flower_table([row]).splitlines()[-1]
    # Flower adds 4.5 s to its round, we add 1.0; its secure round is 6.5 / 1.5 = 4.3x ours; its
    # masked uploads are 6 MiB, 3x its plain ones and 6x ours
    assert line == "| 50 | sparse | 2.00 | 6.50 | 4.50 | 1.00 | 4.3x | 6.0 MiB | 3.00x | 6.00x | 5 KiB |"


def test_the_secagg_updates_are_the_same_for_ours_and_flower_s_and_zero_off_the_support():
    import numpy as np

    from scripts.benchmark_secagg import updates
    from scripts.simulation.common import secagg_updates

    tensors, keep = updates(3, 500, 0.2, seed=7)
    arrays, support = secagg_updates(3, 500, 0.2, seed=7)
    assert all(np.array_equal(t.numpy(), a) for t, a in zip(tensors, arrays, strict=True))
    assert np.array_equal(keep.numpy(), support) and not tensors[1][~keep].any()
