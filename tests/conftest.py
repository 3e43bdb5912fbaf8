"""Every test starts from the environment the suite started with.

A Trainer run inside the test process sets ``LOCAL_RANK``, ``MASTER_PORT`` and Lightning's
other launcher variables in ``os.environ``; a later test that starts ``fit.py`` or a helper as a
subprocess would inherit them, take itself for an already-launched device process, and wait
forever for its peers.

Every test here means the CPU (summaries that say "CPU, N cores", one process a device where a GPU
would take all): CUDA is hidden from the suite and the processes it starts, before torch meets
it, so the suite passes the same on a GPU machine. A test of the GPU would opt back in.
"""

import os
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest

from tests.helpers.fake_data import write_mnist

N_TRAIN = 576  # of the fake MNIST below: 640 written, 64 held out for validation


@pytest.fixture(autouse=True)
def _restore_environment():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True, scope="module")
def _restore_environment_after_the_module():
    """The same around a module: a module-scoped fixture that runs a Trainer in this process sets
    the launcher's variables before any test's own restore begins."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A fake MNIST of 640 training and 64 test images (``tests.helpers.fake_data``)."""
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=640, n_test=64)
    return root


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """An output folder that already holds a run, which no bad call may touch."""
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"previous checkpoint")
    (folder / "summary.json").write_text('{"test_acc": 0.9}')
    return folder
