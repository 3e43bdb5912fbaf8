"""Where a checkpoint keeps the devices' states: process 0's in the file, each other process's beside it.

A process writes only the devices it hosts, so no process ever holds every device's state at a
save. ``CHECKPOINT.devices-R`` holds process R's (R >= 1), with the step it was written at; the
checkpoint records how many processes wrote it, so a sidecar of an older layout is never read.
Checkpoints written before device states existed kept one ``local`` entry per process (one
device each); they read as the same devices without batch-norm statistics.
"""

from pathlib import Path

import torch

from lightning_fed.federation.device_state import read_row

CHECKPOINT_KEY = "federated"


def sidecar_path(checkpoint_path, rank: int) -> Path:
    """Where process ``rank`` (>= 1) writes its devices' states beside ``checkpoint_path``.

    Example::

        >>> sidecar_path("run/checkpoints/last.ckpt", 3).name
        'last.ckpt.devices-3'
    """
    return _beside(checkpoint_path, "devices", rank)


def rows_path(checkpoint_path, rank: int) -> Path:
    """Where process ``rank`` copies its file of device rows (:class:`DiskRows`) at a save.

    Example::

        >>> rows_path("run/checkpoints/last.ckpt", 0).name
        'last.ckpt.rows-0'
    """
    return _beside(checkpoint_path, "rows", rank)


def _beside(checkpoint_path, kind: str, rank: int) -> Path:
    """``CHECKPOINT.KIND-RANK``: a file of process ``rank`` that belongs to ``checkpoint_path``."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.name}.{kind}-{rank}")


def saved_num_devices(checkpoint: dict) -> int | None:
    """N of the federation that wrote ``checkpoint`` (None for a checkpoint of no federation)."""
    federated = checkpoint.get(CHECKPOINT_KEY)
    if not federated:
        return None
    if "num_devices" in federated:
        return federated["num_devices"]
    return len(federated.get("local") or []) or None


def device_states_of(checkpoint: dict, checkpoint_path) -> dict[int, dict]:
    """Every device's saved state, ``{device: DeviceState.state_dict()}``; sidecars are memory-mapped.

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
        path = sidecar_path(checkpoint_path, rank)
        if not path.exists():
            raise ValueError(f"{path} is missing: process {rank} of the run keeps its devices' states there")
        side = torch.load(path, mmap=True, weights_only=False)
        if side.get("global_step") != checkpoint.get("global_step"):
            raise ValueError(f"{path} is of another step than {checkpoint_path}")
        states.update(side["devices"])
    layout = federated.get("rows_layout")
    for state in states.values():
        if state.get("params") is None and state.get("params_at") is not None:
            rank, row = state["params_at"]
            state["params"] = read_row(rows_path(checkpoint_path, rank), row, layout)
    return states
