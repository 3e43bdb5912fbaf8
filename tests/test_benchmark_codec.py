"""scripts/benchmark_codec.py: bad options are one-line errors before anything runs."""

import pytest

from scripts.benchmark_codec import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iterations", "0"], "argument --iterations: 0 is not allowed (must be an integer >= 1)"),
        (["--repeats", "-1"], "argument --repeats: -1 is not allowed (must be an integer >= 1)"),
        (["--repeats", "x"], "argument --repeats: 'x' is not an integer (must be >= 1)"),
        (["--codecs", "float32,qsgd:3"], "--codecs 'qsgd:3': qsgd bits must be one of 2, 4, 8, got 3"),
        (["--codecs", "float32,"], "--codecs 'float32,': an empty spec; give e.g. float32,qsgd:8"),
    ],
)
def test_a_bad_option_is_a_one_line_error_naming_it(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr()
    assert exit_.value.code == 2 and err.out == ""
    assert err.err == f"benchmark_codec.py: error: {message}\n"
