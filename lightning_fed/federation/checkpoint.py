"""Where a checkpoint keeps the devices' states: process 0's in the file, each other process's beside it.

A process writes only the devices it hosts, so no process ever holds every device's state at a
save. ``CHECKPOINT.devices-R.step-S`` holds process R's (R >= 1) at global step S, and
``CHECKPOINT.rows-R.step-S`` process R's folder of device rows (hard links to the rows as they
were at the save, :class:`~lightning_fed.federation.device_rows.DiskRows`; a file of rows in
checkpoints of lightning-fed <= 0.2); the checkpoint records S and how
many processes wrote it, so it names exactly the files written with it. A save writes the new
step's files beside the old ones, then the checkpoint itself (aside, then renamed into place,
:class:`AtomicCheckpointIO`), and only then removes the old step's files: a process killed at
any moment leaves a checkpoint whose files are all there. Checkpoints written before device
states existed kept one ``local`` entry per process (one device each); they read as the same
devices without batch-norm statistics.
"""

from pathlib import Path

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from lightning_fed.federation.device_state import saved_state
from lightning_fed.federation.files import write_aside
from lightning_fed.nn.init_from import network_state

CHECKPOINT_KEY = "federated"


def sidecar_path(checkpoint_path, rank: int, step: int | None = None) -> Path:
    """Where process ``rank`` (>= 1) writes its devices' states beside ``checkpoint_path`` at ``step``.

    Example::

        >>> sidecar_path("run/checkpoints/last.ckpt", 3, step=40).name
        'last.ckpt.devices-3.step-40'
    """
    return _beside(checkpoint_path, "devices", rank, step)


def rows_path(checkpoint_path, rank: int, step: int | None = None) -> Path:
    """Where process ``rank`` keeps its device rows at a save (a folder of hard links, ``DiskRows.copy_to``).

    Example::

        >>> rows_path("run/checkpoints/last.ckpt", 0, step=40).name
        'last.ckpt.rows-0.step-40'
    """
    return _beside(checkpoint_path, "rows", rank, step)


def _beside(checkpoint_path, kind: str, rank: int, step: int | None) -> Path:
    """``CHECKPOINT.KIND-RANK.step-STEP``: a file of process ``rank`` that belongs to ``checkpoint_path``.

    Checkpoints of lightning-fed < 0.3 named theirs without the step (``step=None``).
    """
    path = Path(checkpoint_path)
    name = f"{path.name}.{kind}-{rank}" + ("" if step is None else f".step-{step}")
    return path.with_name(name)


def files_of(checkpoint_path, rank: int) -> list[Path]:
    """Every file of process ``rank`` beside ``checkpoint_path``, of any step (and of the old naming).

    Example::

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("last.ckpt.rows-0.step-4", "last.ckpt.rows-0", "last.ckpt.devices-1.step-4"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> [p.name for p in files_of(folder / "last.ckpt", 0)]
        ['last.ckpt.rows-0', 'last.ckpt.rows-0.step-4']
    """
    path = Path(checkpoint_path)
    found = []
    for kind in ("devices", "rows"):
        plain = f"{path.name}.{kind}-{rank}"
        found += [
            p for p in path.parent.glob(f"{plain}*") if p.name == plain or p.name.startswith(plain + ".step-")
        ]
    return sorted(p for p in found if not p.name.endswith(".partial"))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, but a checkpoint is written aside, synced, then renamed in.

    A process killed while saving leaves the previous checkpoint whole (never a half-written
    ``last.ckpt``); remote (fsspec) paths are written as Lightning writes them.

    Example::

        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "last.ckpt"
        >>> AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
        >>> torch.load(path, weights_only=True), sorted(p.name for p in path.parent.iterdir())
        ({'step': 1}, ['last.ckpt'])
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save = super().save_checkpoint
        write_aside(Path(path), lambda partial: save(checkpoint, partial, storage_options))


def device_states_of(checkpoint: dict, checkpoint_path) -> dict[int, dict]:
    """Every device's saved state (``DeviceStates.state_dict()``'s entries, each device's row read:
    :func:`~lightning_fed.federation.device_state.saved_state`); sidecars are memory-mapped.

    Raises:
        ValueError: a sidecar is missing or of another step than the checkpoint.
    """
    federated = checkpoint.get(CHECKPOINT_KEY) or {}
    if "devices" not in federated:  # before device states: a process was a device
        return {
            device: {
                "params": e["params"],
                "buffers": {},
                "optimizer": e.get("optimizer", {}),
                "rng": e.get("rng", {}),
            }
            for device, e in enumerate(federated.get("local") or [])
        }
    states = dict(federated.get("devices") or {})
    for rank in range(1, federated.get("processes", 1)):
        states.update(read_sidecar(checkpoint, checkpoint_path, rank))
    layout, step = federated.get("rows_layout"), federated.get("files_step")
    rows_file = lambda rank: rows_path(checkpoint_path, rank, step)  # noqa: E731
    return {device: saved_state(state, (), rows_file, layout) for device, state in states.items()}


def read_sidecar(checkpoint: dict, checkpoint_path, rank: int) -> dict[int, dict]:
    """Process ``rank``'s device states as saved with ``checkpoint`` (memory-mapped).

    Raises:
        ValueError: the sidecar is missing, unreadable, or of another step than the checkpoint.
    """
    path = sidecar_path(checkpoint_path, rank, (checkpoint.get(CHECKPOINT_KEY) or {}).get("files_step"))
    if not path.exists():
        raise ValueError(f"{path} is missing: process {rank} of the run keeps its devices' states there")
    try:
        side = torch.load(path, mmap=True, weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt file
        raise ValueError(f"{path} is not a readable PyTorch file ({type(error).__name__})") from None
    if side.get("global_step") != checkpoint.get("global_step"):
        raise ValueError(f"{path} is of another step than {checkpoint_path}")
    return side["devices"]


def network_state_of_device(checkpoint: dict, device: int | None, path=None) -> dict:
    """The network's state dict from ``checkpoint`` with ``device``'s own local parameters (its
    log_sigma2 in the paper's variant); None gives the model as saved (device 0's).

    Raises:
        ValueError: ``device N: ...`` when the checkpoint holds no state of that device.
    """
    state = network_state(checkpoint)
    if device is None:
        return state
    local = device_states_of(checkpoint, path)
    if not local:
        raise ValueError(f"device {device}: the checkpoint holds no per-device log_sigma2")
    if device not in local or not local[device]["params"]:
        raise ValueError(
            f"device {device}: the checkpoint holds the local log_sigma2 of {len(local)} devices "
            f"(0 to {len(local) - 1})"
        )
    return {**state, **network_state(local[device]["params"])}
