"""scripts/benchmark_codec.py: bad counts are one-line errors before anything runs."""

import pytest

from scripts.benchmark_codec import main


@pytest.mark.parametrize("flag", ["--iterations", "--repeats"])
def test_a_count_below_one_is_a_one_line_error_naming_it(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([flag, "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "--iterations and --repeats must be >= 1" in err
