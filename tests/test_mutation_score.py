"""scripts/mutation_score.py: the score from mutmut's result files, the sample, bad input."""

import json
import os
import time
from pathlib import Path

import pytest

from scripts.mutation_score import main


def _meta(root, source, codes):
    path = root / f"{source}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes}))


@pytest.fixture
def mutants(tmp_path):
    root = tmp_path / "mutants"
    _meta(
        root, "pkg/a.py", {"a.f__mutmut_1": 1, "a.f__mutmut_2": 0, "a.f__mutmut_3": 36, "a.g__mutmut_1": 33}
    )
    _meta(root, "pkg/b.py", {"b.h__mutmut_1": 0, "b.h__mutmut_2": None})
    return root


def test_the_score_is_killed_over_killed_and_survived_per_file_and_for_all(mutants, capsys):
    assert main(["--mutants", str(mutants)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == "pkg/a.py: score 66.7 %, strict 50.0 % (1 killed, 1 timed out, 1 survived, 1 no tests, 0 not run, "
        "0 equivalent)"
    )
    assert (
        lines[1]
        == "pkg/b.py: score 0.0 %, strict 0.0 % (0 killed, 0 timed out, 1 survived, 0 no tests, 1 not run, "
        "0 equivalent)"
    )
    assert (
        lines[2]
        == "all: score 50.0 %, strict 40.0 % (1 killed, 1 timed out, 2 survived, 1 no tests, 1 not run, "
        "0 equivalent)"
    )
    assert lines[3:] == ["survived: a.f__mutmut_2", "survived: b.h__mutmut_1"]


def test_equivalent_mutants_leave_the_denominator(mutants, tmp_path, capsys):
    listed = tmp_path / "equivalent.txt"
    listed.write_text("# reason on each line\nb.h__mutmut_1  # adds zero\n")
    main(["--mutants", str(mutants), "--equivalent", str(listed), "pkg/b.py"])
    assert capsys.readouterr().out.splitlines() == [
        "pkg/b.py: score -, strict - (0 killed, 0 timed out, 0 survived, 0 no tests, 1 not run, "
        "1 equivalent)",
        "all: score -, strict - (0 killed, 0 timed out, 0 survived, 0 no tests, 1 not run, 1 equivalent)",
    ]


def test_names_restrict_the_report_to_those_mutants(mutants, tmp_path, capsys):
    names = tmp_path / "sample.txt"
    names.write_text("a.f__mutmut_1 b.h__mutmut_1\n")
    main(["--mutants", str(mutants), "--names", str(names)])
    assert capsys.readouterr().out.splitlines() == [
        "pkg/a.py: score 100.0 %, strict 100.0 % (1 killed, 0 timed out, 0 survived, 0 no tests, 0 not run, "
        "0 equivalent)",
        "pkg/b.py: score 0.0 %, strict 0.0 % (0 killed, 0 timed out, 1 survived, 0 no tests, 0 not run, "
        "0 equivalent)",
        "all: score 50.0 %, strict 50.0 % (1 killed, 0 timed out, 1 survived, 0 no tests, 0 not run, "
        "0 equivalent)",
        "survived: b.h__mutmut_1",
    ]


def test_the_sample_is_a_function_of_the_seed(mutants, capsys):
    main(["--mutants", str(mutants), "--sample", "3", "--seed", "1"])
    first = capsys.readouterr().out.split()
    main(["--mutants", str(mutants), "--sample", "3", "--seed", "1"])
    assert capsys.readouterr().out.split() == first and len(set(first)) == 3
    main(["--mutants", str(mutants), "--sample", "99"])
    assert len(capsys.readouterr().out.split()) == 6  # every mutant, once


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mutants", "{tmp}/none"], "--mutants {tmp}/none is not a folder"),
        (["--sample", "0"], "--sample 0: give a whole number >= 1"),
        (["--names", "{tmp}/none.txt"], "--names {tmp}/none.txt is not a file"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, mutants, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as stop:
        main(["--mutants", str(mutants), *args] if args[0] != "--mutants" else args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample", "0"], "mutation_sample.py: error: --sample 0: give a whole number >= 1"),
        (
            ["--equivalent", "{tmp}/none.txt"],
            "mutation_sample.py: error: --equivalent {tmp}/none.txt is not a file",
        ),
    ],
)
def test_the_sample_runner_s_bad_input_is_one_line_exit_2_before_mutmut_starts(
    args, message, tmp_path, capsys, monkeypatch
):
    from scripts import mutation_sample

    ran = []
    monkeypatch.setattr(mutation_sample.subprocess, "run", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit) as stop:
        mutation_sample.main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.strip() == message.format(tmp=tmp_path) and ran == []


def test_the_sample_runner_stops_a_run_at_its_budget_with_every_process_of_its_group(tmp_path):
    """A run past its budget is stopped, its children too (mutmut's workers share its group)."""
    import sys

    from scripts.mutation_sample import _run_within

    pid_file = tmp_path / "child.pid"
    sleeper = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(600)"
    )
    assert _run_within([sys.executable, "-c", "pass"], seconds=60) is True
    assert _run_within([sys.executable, "-c", sleeper], seconds=3) is False
    child = int(pid_file.read_text())
    for _ in range(100):  # killed with its group: gone, or a zombie until someone reaps it
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")
