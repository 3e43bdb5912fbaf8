"""Starting a run in its folder, or continuing one: a fresh folder, or a checkpoint that fits.

Errors name the arguments as a Python caller passes them (``resume=...``); ``fit.py`` rewrites
them to its flags (``--resume ...``).
"""

from pathlib import Path

import pytorch_lightning as pl

from lightning_fed.federation.config import check_same_trajectory
from lightning_fed.nn.init_from import read_checkpoint

RUN_FILES = ("summary.json", "checkpoints/last.ckpt")  # what a started run has written


def last_checkpoint(output: Path) -> Path:
    """Where a run in ``output`` keeps its latest checkpoint (``RunCheckpoint``'s ``last.ckpt``)."""
    return Path(output) / "checkpoints" / "last.ckpt"


def check_fresh_folder(output: Path) -> None:
    """Refuses a folder that already holds a run: a new run would overwrite it.

    Example::

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> check_fresh_folder(folder)  # empty: fine
        >>> _ = (folder / "summary.json").write_text("{}")
        >>> try:
        ...     check_fresh_folder(folder)
        ... except ValueError as error:
        ...     print(str(error).replace(str(folder), "RUN").split("; ")[0])
        output_dir='RUN' already holds a run (summary.json)
    """
    existing = [name for name in RUN_FILES if (Path(output) / name).exists()]
    if existing:
        raise ValueError(
            f"output_dir={str(output)!r} already holds a run ({existing[0]}); "
            "pass resume='last' to continue it, or another output_dir"
        )


def check_resume(
    path: Path, model: pl.LightningModule, num_devices: int, network: str, trajectory: dict | None = None
) -> None:
    """Refuses a checkpoint that cannot continue this run: another architecture (its state dict's
    keys or shapes differ from ``model``'s), a federation of another size, or one trained with other
    trajectory options than ``trajectory`` (the strategy's own check, made before anything starts:
    :func:`~lightning_fed.federation.config.check_same_trajectory`).

    ``network`` names the model's architecture in the message.
    """
    checkpoint = read_checkpoint(path, mmap=True)  # keys and shapes only; Lightning reads it
    state, own = checkpoint.get("state_dict", {}), model.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise ValueError(
            f"resume={str(path)!r} is a checkpoint of another architecture than network={network!r}"
        )
    saved = (checkpoint.get("federated") or {}).get("num_devices")
    if saved is not None and saved != num_devices:
        raise ValueError(
            f"resume={str(path)!r} is a run of {saved} devices; resume it with num_devices={saved}"
        )
    if trajectory is not None:
        check_same_trajectory((checkpoint.get("federated") or {}).get("config") or {}, trajectory, path)


def resume_checkpoint(
    output: Path,
    resume: str | None,
    model: pl.LightningModule,
    num_devices: int,
    network: str,
    trajectory: dict | None = None,
) -> str | None:
    """The checkpoint a run in ``output`` continues from, checked against ``model``; None for a
    fresh run (whose folder must hold no run). ``resume`` is a path, or ``"last"`` for the
    folder's own latest checkpoint.

    Example::

        >>> import tempfile
        >>> resume_checkpoint(Path(tempfile.mkdtemp()), None, pl.LightningModule(), 4, "mlp") is None
        True
    """
    if resume is None:
        check_fresh_folder(output)
        return None
    path = last_checkpoint(output) if resume == "last" else Path(resume)
    check_resume(path, model, num_devices, network, trajectory)
    return str(path)
