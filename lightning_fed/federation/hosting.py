"""Which federated devices each process hosts: contiguous, equal blocks."""


def check_processes(processes: int, num_devices: int) -> None:
    """``processes`` must divide ``num_devices`` into equal blocks.

    Example::

        >>> check_processes(4, 16)
        >>> check_processes(3, 16)
        Traceback (most recent call last):
        ...
        ValueError: 3 processes do not divide 16 devices evenly; use one of 1, 2, 4, 8, 16
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    if processes > num_devices:
        raise ValueError(
            f"{processes} processes are more than the {num_devices} devices; use at most {num_devices}"
        )
    if num_devices % processes:
        divisors = ", ".join(str(d) for d in range(1, num_devices + 1) if num_devices % d == 0)
        raise ValueError(
            f"{processes} processes do not divide {num_devices} devices evenly; use one of {divisors}"
        )


def hosted_devices(num_devices: int, processes: int, rank: int) -> list[int]:
    """The devices process ``rank`` of ``processes`` hosts.

    Example::

        >>> hosted_devices(16, 4, rank=1), hosted_devices(4, 1, rank=0)
        ([4, 5, 6, 7], [0, 1, 2, 3])
    """
    check_processes(processes, num_devices)
    per_process = num_devices // processes
    return list(range(rank * per_process, (rank + 1) * per_process))


DEVICE_STORES = ("auto", "memory", "disk")
DISK_STORE_ABOVE_BYTES = 2 * 2**30  # "auto": local parameters of the hosted devices beyond this go to disk


def checked_device_store(device_store: str) -> str:
    """Where the hosted devices' local parameters live: ``auto``, ``memory`` or ``disk``."""
    if device_store not in DEVICE_STORES:
        raise ValueError(f"device_store must be one of {', '.join(DEVICE_STORES)}, got {device_store!r}")
    return device_store


def row_stage_names(strategy) -> tuple[str, ...]:
    """The model-sized state a device's row holds besides its local parameters: the upload stages'
    (error feedback's residual, DGC's velocity) and the algorithm's (a device's own copy of the model)."""
    return (*strategy.compression.feedback_kinds, *strategy.algorithm.device_row_names)


def device_rows_folder(strategy, trainer):
    """The folder of the hosted devices' local parameters, or None to keep them in memory."""
    from pathlib import Path

    if strategy.device_store == "memory":
        return None
    module, plan = strategy.lightning_module, strategy.plan
    per_device = sum(module.get_parameter(n).numel() * 4 for n in plan.local_parameters)
    per_device += len(row_stage_names(strategy)) * 4 * sum(plan.numels)
    hosted = len(strategy.hosted_devices)
    if strategy.device_store == "auto" and per_device * hosted <= DISK_STORE_ABOVE_BYTES:
        return None
    return Path(trainer.default_root_dir) / "device-states" / f"process-{strategy.global_rank}"


def device_weights(aggregation: str, num_devices: int, datamodule) -> dict[int, float]:
    """Each device's weight in the server's average: 1 (``mean``) or its shard size (``weighted``)."""
    if aggregation == "mean":
        return {d: 1.0 for d in range(num_devices)}
    sizes = getattr(datamodule, "device_sizes", None)
    if sizes is None:
        raise ValueError("aggregation='weighted' needs a datamodule with device_sizes() (shard sizes)")
    return dict(enumerate(float(size) for size in sizes()))
