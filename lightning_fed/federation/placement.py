"""Which process trains which of a round's devices: the process that hosts it, or dealt in balance.

A process hosts a contiguous block of the devices (:mod:`~lightning_fed.federation.hosting`): it
keeps their state, saves it in checkpoints and evaluates them. Under ``placement="hosted"`` it also
trains the round's sampled devices of its block. With K of N sampled, how many fall in a block
varies from round to round (at 50 of 1,000 over two processes, the fuller block has 27.7 on average,
11 % over an even 25), and every process waits for the fullest at the round's end.

Under ``placement="balanced"`` the round's reporting devices are dealt to the processes so that
each gets the same amount of work (:func:`deal`: their local steps, longest first, each to the
least loaded process), whichever block they sit in. A device's computation depends only on its
state and the model it receives, so it is the same wherever it runs: every process holds every
device's state, and after each round the processes exchange the states of the devices they
trained (:func:`share_states`: a device's random stream, batch position and buffers; a few KB).
That is why the balanced placement is only for devices whose state is that small: no local
parameters (the paper's variant keeps log_sigma2 on each device), no upload stage or algorithm
state kept in a device's row (error feedback, DGC, worker momentum, a device's own model copy),
and no per-device roles that a process's view decides (a simulated attack, secure aggregation,
client-level DP's clip bits). ``auto`` (the default) deals a sampled round's devices in balance
wherever that holds and there are several processes, and keeps the hosted placement otherwise.

With ``transport="sparse"`` (every upload decoded in device order) a balanced run's model is the
same bit for bit as the hosted run's and the one-process run's (``tests/test_placement.py``).
"""

import pickle

from lightning_fed.communication import Traffic
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.downlink import HELD
from lightning_fed.federation.hosting import row_stage_names
from lightning_fed.federation.transport import all_gather_bytes

PLACEMENTS = ("auto", "hosted", "balanced")


def checked_placement(placement: str) -> str:
    """``placement`` if it is one of :data:`PLACEMENTS`, else a one-line error.

    Example::

        >>> checked_placement("balanced")
        'balanced'
        >>> checked_placement("even")
        Traceback (most recent call last):
        ...
        ValueError: placement must be one of auto, hosted, balanced, got 'even'
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    return placement


def deal(devices: list[int], work: dict[int, int], processes: int) -> list[list[int]]:
    """The devices each of ``processes`` trains: longest work first, each to the process with the
    least work so far (then the fewest devices, then the lowest rank); each list in device order.
    The same in every process, so no process needs to be told.

    Example::

        >>> deal([3, 8, 1, 5], {3: 2, 8: 2, 1: 2, 5: 2}, processes=2)
        [[1, 5], [3, 8]]
        >>> deal([0, 1, 2, 3], {0: 9, 1: 3, 2: 3, 3: 3}, processes=2)
        [[0], [1, 2, 3]]
    """
    loads, dealt = [0] * processes, [[] for _ in range(processes)]
    for device in sorted(devices, key=lambda d: (-work[d], d)):
        least = min(range(processes), key=lambda p: (loads[p], len(dealt[p]), p))
        dealt[least].append(device)
        loads[least] += work[device]
    return [sorted(part) for part in dealt]


def balance_blocker(config, local_parameters: bool, row_names: tuple[str, ...], algorithm=None) -> str | None:
    """Why devices of a federation of ``config`` cannot be dealt across processes (their state or
    role is tied to the process hosting them), or None when they can. ``local_parameters``: the
    devices keep parameters of their own; ``row_names``: the model-sized state kept on each device
    (:func:`row_names_of`).

    Example::

        >>> from lightning_fed.federation.config import FederationConfig
        >>> print(balance_blocker(FederationConfig(devices_per_round=5), False, ()))
        None
        >>> balance_blocker(FederationConfig(devices_per_round=5), True, ())
        "needs devices without local parameters (the paper's variant keeps log_sigma2 on each)"
    """
    if local_parameters:
        return "needs devices without local parameters (the paper's variant keeps log_sigma2 on each)"
    if row_names:
        return f"needs devices without model-sized state of their own ({', '.join(row_names)})"
    if algorithm is not None and not hasattr(algorithm, "local_step_count"):
        return f"needs an algorithm that says each device's local steps, not {type(algorithm).__name__}"
    for name, value in (
        ("attack", config.attack),
        ("secure_aggregation", config.secure_aggregation),
        ("dp_clip", config.dp_clip),
    ):
        if value:
            return f"does not go with {name}={value!r} (a device's role there is its hosting process's)"
    return None


def row_names_of(config, num_devices: int | None) -> tuple[str, ...]:
    """The model-sized state ``config`` keeps on each device: the upload stages' (error feedback's
    residual, DGC's velocity, worker momentum) and a device's own copy of the model (the change
    since it is what sampled devices download, ``download="delta"``).

    Example::

        >>> from lightning_fed.federation.config import FederationConfig
        >>> row_names_of(FederationConfig(worker_momentum=0.9), 100)
        ('momentum',)
    """
    compression = Compression.of(config)
    own_copy = config.download == "delta" and not config.every_device(num_devices)
    return (*compression.feedback_kinds, *((HELD,) if own_copy else ()))


def resolve_placement(strategy) -> str:
    """The placement a fit runs with: ``hosted`` or ``balanced`` (``auto`` resolved; one process
    trains every device either way); ``balanced`` asked for where :func:`balance_blocker` finds a
    reason is a one-line error."""
    placement = checked_placement(strategy.placement)
    blocker = None
    if placement != "hosted":
        local = bool(strategy.plan.local_parameters)
        blocker = balance_blocker(strategy.config, local, row_stage_names(strategy), strategy.algorithm)
    if placement == "balanced" and blocker is not None:
        raise ValueError(f"placement='balanced' {blocker}; use placement='hosted'")
    if strategy.world_size == 1:
        return "hosted"
    if placement == "auto":
        return "balanced" if blocker is None and not strategy.synchronous else "hosted"
    return placement


def share_states(strategy, trained: list[int]) -> None:
    """After a balanced round: every process sends the states of the devices it ``trained`` and
    takes the others'; the bytes exchanged are counted as the transport's (``transport_bytes``)."""
    states = strategy.devices.states
    mine = pickle.dumps({device: states[device] for device in trained})
    parts, moved = all_gather_bytes(mine, device=getattr(strategy.transport_of_round, "device", None))
    strategy.ledger.record(Traffic(transport_bytes=moved))
    for rank, part in enumerate(parts):
        if rank != strategy.global_rank:  # this process's own are the states it holds
            states.update(pickle.loads(part))
