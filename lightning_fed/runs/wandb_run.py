"""A run's Weights & Biases logging: a logger that falls back to offline, and the run's finish.

W&B is optional at run time: ``mode="disabled"`` never touches it, and an online run that cannot
reach W&B logs offline under ``OUTPUT/wandb`` for ``wandb sync`` later.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import wandb
from pytorch_lightning.loggers import WandbLogger

INIT_TIMEOUT_S = 30  # the longest an online run waits for W&B before it logs offline


def previous_run_id(output: Path) -> str | None:
    """The id of the folder's last W&B run (``wandb/latest-run -> offline-run-DATE-ID``), to continue it.

    Example::

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "wandb" / "offline-run-20261201_120000-abc123").mkdir(parents=True)
        >>> (folder / "wandb" / "latest-run").symlink_to("offline-run-20261201_120000-abc123")
        >>> previous_run_id(folder), previous_run_id(Path(tempfile.mkdtemp()))
        ('abc123', None)
    """
    latest = Path(output) / "wandb" / "latest-run"
    return latest.resolve().name.rsplit("-", 1)[-1] if latest.is_symlink() else None


def wandb_logger(
    output: Path,
    *,
    project: str,
    mode: str = "online",
    config: dict | None = None,
    resume: bool = False,
    open_now: bool = True,
    program: str = "lightning-fed",
) -> WandbLogger:
    """The run's W&B logger, saving under ``output``; a resumed run continues its W&B run.

    With ``mode="online"`` and ``open_now`` (the launching process), the W&B run is opened here,
    before training starts, waiting at most ``INIT_TIMEOUT_S``; on any failure (no network, no
    API key) one line on stderr says so (``program: W&B online unreachable (...)``) and the
    logger returned logs offline instead. A missing network therefore never stops a run, and
    never slows its training steps.
    """
    resumed_id = previous_run_id(output) if resume else None

    def make(mode: str) -> WandbLogger:
        return WandbLogger(
            project=project, save_dir=str(output), mode=mode, config=config, id=resumed_id,
            resume="allow" if resumed_id else None, settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S),
        )  # fmt: skip

    logger = make(mode)
    if mode == "online" and open_now:
        try:
            logger.experiment  # noqa: B018 (opens the run now, not inside training)
        except Exception as error:  # any failure of W&B's own start-up: the run goes on offline
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            where = Path(output) / "wandb"
            print(
                f"{program}: W&B online unreachable ({reason}); logging offline to {where}", file=sys.stderr
            )
            logger = make("offline")
    return logger


def finish_wandb(trainer: pl.Trainer, summary: dict, plots: list[Path]) -> None:
    """Each W&B logger of ``trainer`` gets the summary as a table and the plots as images, and
    its run is finished (synced, when online). Other loggers are left alone."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table("summary", columns=list(summary), data=[list(summary.values())])
            logger.log_image("plots", [str(path) for path in plots], caption=[path.stem for path in plots])
            logger.experiment.finish()
