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
