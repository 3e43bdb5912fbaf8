"""Every test starts from the environment the suite started with.

A Trainer run inside the test process sets ``LOCAL_RANK``, ``MASTER_PORT`` and Lightning's
other launcher variables in ``os.environ``; a later test that starts ``fit.py`` or a helper as a
subprocess would inherit them, take itself for an already-launched device process, and wait
forever for its peers.
"""

import os

import pytest


@pytest.fixture(autouse=True)
def _restore_environment():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
