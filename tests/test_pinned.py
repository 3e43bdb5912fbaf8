"""Pinned runs: today's code sends the same bytes and ends with the same weights as the code that
recorded ``tests/data/pinned.json`` (``python -m tests.helpers.pinned --write``; see
``tests/helpers/pinned.py`` for the configurations and what is hashed).

The ledger is compared exactly: its counts are integers, and every one is a payload's length or what
was in it. The weights are compared bit for bit in runs of their own process started with one thread
(the slow tests; the recording was made so, by the code before the redesign), where the float
kernels are those of the recording (the same torch, CPU capability and vector extensions:
``pinned.machine``); in the test process (quick), and on another CPU, the same arithmetic may round
differently in the last bit, so there the per-tensor sums are compared with a relative tolerance of
1e-4 (a few float32 roundings per step, over four steps, stay orders below it, while any change of
the algorithm moves them by far more).
"""

import json

import pytest
import torch

from tests.helpers import pinned

RECORDED = json.loads(pinned.PINNED.read_text())
IN_PROCESS = [name for name, config in pinned.CONFIGS.items() if config[1] == 1]
APART = [pytest.param(name, marks=pytest.mark.slow) for name in pinned.CONFIGS]


def _assert_as_recorded(name: str, result: dict, exact: bool) -> None:
    recorded = RECORDED["runs"][name]
    assert result["history"] == recorded["history"], "the ledger changed"
    if exact and pinned.machine() == RECORDED["machine"]:
        assert result["model"] == recorded["model"], "the final model's bits changed"
        assert result["devices"] == recorded["devices"], "the devices' own states changed"
    else:
        assert result["model_sums"] == pytest.approx(recorded["model_sums"], rel=1e-4, abs=1e-6)


def test_every_configuration_is_pinned():
    assert sorted(RECORDED["runs"]) == sorted(pinned.CONFIGS)


@pytest.mark.parametrize("name", IN_PROCESS)
def test_a_configuration_in_one_process_sends_and_ends_as_recorded(name, data_dir, tmp_path):
    threads = torch.get_num_threads()
    try:
        result = pinned.run(name, data_dir, tmp_path)
    finally:
        torch.set_num_threads(threads)
    # this process's float kernels were chosen at its start, under whatever thread count the
    # machine gives: the weights are compared by their sums here, bit for bit in the runs apart
    _assert_as_recorded(name, result, exact=False)


@pytest.mark.parametrize("name", APART)
def test_a_configuration_over_processes_sends_and_ends_as_recorded(name, data_dir, tmp_path):
    _assert_as_recorded(name, pinned.run_apart(name, data_dir, tmp_path / "result.json"), exact=True)
