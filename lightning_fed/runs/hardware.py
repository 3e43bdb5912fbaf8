"""Where a run's processes go: the accelerator, processes per node, and GPUs shared between them."""

import os

import torch

from lightning_fed.runs.cluster import cluster_launcher, global_rank


def is_launcher() -> bool:
    """Whether this process writes the run folder: the process a run was started as (on node 0), not
    a device process that Lightning's launcher spawned (those have ``LOCAL_RANK`` set); under
    torchrun or srun, which start every process, the one of global rank 0."""
    if cluster_launcher() is not None:
        return global_rank() == 0
    return "LOCAL_RANK" not in os.environ and os.environ.get("NODE_RANK", "0") == "0"


def resolve_accelerator(accelerator: str, devices: int, gpus: int) -> str:
    """The accelerator of a run of ``devices`` processes per node on a node with ``gpus`` GPUs.

    ``auto`` takes the GPUs whenever the node has one; with fewer GPUs than devices the device
    processes share them (``shared_gpus``).

    Example::

        >>> resolve_accelerator("auto", 16, gpus=1), resolve_accelerator("auto", 4, gpus=0)
        ('gpu', 'cpu')
    """
    if accelerator == "auto":
        return "gpu" if gpus >= 1 else "cpu"
    if accelerator in ("gpu", "cuda") and gpus < 1:
        raise ValueError(f"accelerator={accelerator} needs a GPU, this machine has none; use accelerator=cpu")
    return accelerator


def default_processes(devices: int, num_nodes: int, accelerator: str, gpus: int) -> int:
    """Processes per node when ``--processes`` is not given: one on a CPU node (it starts fastest
    and holds the least memory: docs/benchmarks.md, "16 devices in 1, 2 or 16 processes"), one per
    GPU on a GPU node, as many as divide evenly.

    Example::

        >>> default_processes(16, 1, "cpu", gpus=0), default_processes(16, 1, "gpu", gpus=8)
        (1, 8)
        >>> default_processes(12, 1, "gpu", gpus=8), default_processes(16, 2, "cpu", gpus=0)
        (6, 1)
    """
    most = gpus if accelerator in ("gpu", "cuda") else 1
    per_node = max(devices // num_nodes, 1)
    return max(p for p in range(1, max(min(most, per_node), 1) + 1) if devices % (p * num_nodes) == 0)


def shared_gpus(devices: int, gpus: int) -> list[torch.device] | None:
    """The GPU of each device process when there are fewer GPUs than devices (round robin).

    None when every device has a GPU of its own. Two processes on one GPU cannot talk through
    NCCL, so a run with shared GPUs synchronises through gloo (``strategy_options``).

    Example::

        >>> [str(gpu) for gpu in shared_gpus(3, gpus=2)], shared_gpus(4, gpus=4)
        (['cuda:0', 'cuda:1', 'cuda:0'], None)
    """
    if gpus >= devices:
        return None
    return [torch.device("cuda", rank % gpus) for rank in range(devices)]


def strategy_options(accelerator: str, devices: int, gpus: int) -> dict:
    """``FederatedStrategy`` and ``Trainer`` options of the device placement.

    Example::

        >>> options = strategy_options("gpu", 16, gpus=1)
        >>> options["strategy"]["process_group_backend"], len(options["strategy"]["parallel_devices"])
        ('gloo', 16)
        >>> options["trainer"]
        {'devices': 'auto'}
        >>> strategy_options("cpu", 16, gpus=1)
        {'strategy': {}, 'trainer': {'devices': 16}}
    """
    placement = shared_gpus(devices, gpus) if accelerator in ("gpu", "cuda") else None
    if placement is None:
        return {"strategy": {}, "trainer": {"devices": devices}}
    return {
        "strategy": {"parallel_devices": placement, "process_group_backend": "gloo"},
        "trainer": {"devices": "auto"},  # the strategy's parallel_devices say how many processes
    }


def hardware_of(device: torch.device) -> str:
    """What a run trained on, for the results table: the GPU's name, or the CPU's core count.

    Example::

        >>> hardware_of(torch.device("cpu")) == f"CPU, {os.cpu_count()} cores"
        True
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {os.cpu_count()} cores"
