"""lightning_fed.runs.run_lock: one process at a time in a run folder, and no stale lock after it ends."""

import os
import subprocess
import sys

import pytest

from lightning_fed.runs.hardware import is_launcher
from lightning_fed.runs.run_lock import RunFolderInUse, hold_run_folder

IMPORTS = (
    "import sys, time\nfrom pathlib import Path\nfrom lightning_fed.runs.run_lock import hold_run_folder\n"
)


def _holder(folder, then: str) -> subprocess.Popen:
    code = IMPORTS + f"hold_run_folder(Path({str(folder)!r})); print('held', flush=True); {then}"
    pipes = {"stdout": subprocess.PIPE, "stdin": subprocess.PIPE, "text": True}
    return subprocess.Popen([sys.executable, "-c", code], **pipes)


def test_another_process_holding_the_folder_refuses_it_until_it_ends(tmp_path):
    holder = _holder(tmp_path / "run", then="sys.stdin.readline()")
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderInUse, match="is in use by a fit.py still training there"):
        hold_run_folder(tmp_path / "run")
    holder.communicate("go on\n", timeout=60)
    os.close(hold_run_folder(tmp_path / "run"))


def test_a_killed_holder_leaves_no_stale_lock_and_no_file(tmp_path):
    holder = _holder(tmp_path / "run", then="time.sleep(600)")
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait(timeout=60)
    os.close(hold_run_folder(tmp_path / "run"))
    assert list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, True), ({"LOCAL_RANK": "1"}, False), ({"NODE_RANK": "1"}, False), ({"NODE_RANK": "0"}, True)],
)
def test_only_the_launcher_of_node_0_takes_the_lock(env, expected, monkeypatch):
    for name in ("LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_launcher() is expected
