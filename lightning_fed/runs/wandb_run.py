"""A run's Weights & Biases logging: a logger that falls back to offline, and the run's finish.

W&B is optional at run time: ``mode="disabled"`` never touches it, and an online run that cannot
reach W&B logs offline under ``OUTPUT/wandb`` for ``wandb sync`` later.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
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


class _WandbLogger(WandbLogger):
    """Lightning's W&B logger without the ``anonymous`` argument it always hands ``wandb.init``
    (``None`` unless asked), which wandb 0.2x+ answers with a deprecation warning at every run."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


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
    import wandb  # here, not at the top: a run with W&B disabled needs no wandb package

    resumed_id = previous_run_id(output) if resume else None

    def make(mode: str) -> WandbLogger:
        return _WandbLogger(
            project=project, save_dir=str(output), mode=mode, config=config, id=resumed_id,
            resume="allow" if resumed_id else None,
            settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True),  # fit.py says where it logged
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


def finish_wandb(trainer: pl.Trainer, summary: dict, plots: list[Path]) -> list[str]:
    """Each W&B logger of ``trainer`` gets the summary as a table and the plots as images, and
    its run is finished (synced, when online). Other loggers are left alone. W&B itself prints
    nothing (``silent``); what it did is returned, one line a run: where the offline run is and
    how to upload it, or the online run's address."""
    said = []
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table("summary", columns=list(summary), data=[list(summary.values())])
            logger.log_image("plots", [str(path) for path in plots], caption=[path.stem for path in plots])
            run = logger.experiment
            said.append(where_logged(run.settings.mode, run))
            run.finish()
    return said


def where_logged(mode: str, run) -> str:
    """One line: an offline run's folder and the command that uploads it, or an online run's address.

    Example::

        >>> from types import SimpleNamespace
        >>> print(where_logged("offline", SimpleNamespace(dir="/runs/a/wandb/run-1/files")))
        W&B: offline run in /runs/a/wandb/run-1; upload it with: wandb sync /runs/a/wandb/run-1
    """
    if mode == "offline":
        folder = Path(run.dir).parent
        return f"W&B: offline run in {folder}; upload it with: wandb sync {folder}"
    return f"W&B: {run.url}"
