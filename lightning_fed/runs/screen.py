"""What a run's screen shows: the progress bar, one line per event that matters, the summary.

Lightning's info lines (accelerators found, the distributed set-up, the model summary, tips, why
``fit`` stopped) go to the run's log file instead, where they are kept for whoever needs them.
Four warnings are dropped: three that Lightning prints about itself rather than the run (a
deprecation inside its own ``_pytree`` module, a logging interval longer than a short epoch, and
which default logger it picks without TensorBoard), and its advice to log per-epoch metrics
with ``sync_dist=True``, which does not apply to the ``comm/*`` figures (one ledger of all
traffic, the same in every process) nor to ``sparsity/*`` (device 0's on purpose: its model is
the one checkpointed and tested). Every other warning still reaches the screen.
"""

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric")
LIGHTNING_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"It is recommended to use `self.log\('(comm|sparsity)/",
    r"Starting from v1.9.0, `tensorboardX` has been removed",
)


def drop_lightning_noise() -> None:
    """Ignore the warnings of :data:`LIGHTNING_NOISE` in this process (others still show)."""
    for message in LIGHTNING_NOISE:
        warnings.filterwarnings("ignore", message=message)


@contextmanager
def lightning_info_to(path: Path | None):
    """Within the block, Lightning's info lines go to ``path`` (appended) and no longer to the screen;
    its warnings and errors still reach the screen too. ``None``: leave everything as it is.

    Example::

        >>> import logging, tempfile
        >>> from pathlib import Path
        >>> log = Path(tempfile.mkdtemp()) / "fit.log"
        >>> with lightning_info_to(log):
        ...     logging.getLogger("pytorch_lightning.utilities.rank_zero").info("GPU available: False")
        >>> "GPU available: False" in log.read_text()
        True
    """
    if path is None:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    screens = [
        (h, h.level)
        for name in LIGHTNING_LOGGERS
        for h in logging.getLogger(name).handlers
        if type(h) is logging.StreamHandler
    ]
    for screen, _ in screens:
        screen.setLevel(logging.WARNING)
    loggers = [(logging.getLogger(name), logging.getLogger(name).level) for name in LIGHTNING_LOGGERS]
    for logger, _ in loggers:
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level in loggers:
            logger.removeHandler(handler)
            logger.setLevel(level)
        for screen, level in screens:
            screen.setLevel(level)
        handler.close()
