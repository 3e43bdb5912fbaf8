"""A device process that dies stops the whole run at once, named, instead of leaving the others
waiting in a collective.

The launching process watches the device processes it started (:class:`ProcessWatchdog`): when
one is killed (a signal: ``kill -9``, the out-of-memory killer) it prints one line naming the
process and its devices and kills every process of the run, within ``period`` seconds (at once
when this process's collective with it fails first, :meth:`lost` with ``grace=0``). A device
process that exits with an error code gets ``grace`` seconds first, for the launching process
to report the same error itself (a non-finite loss is raised on every process at the same
step). Each device process dies with its launcher (:func:`die_with_parent`, Linux), so a lost
launcher leaves no process behind either. Checkpoints are written atomically, so the last one
is whole whatever moment the run is stopped at.

A process that ends normally closes its process group before the interpreter shuts down
(:func:`close_process_group_at_exit`): Lightning does so for NCCL only, and a gloo group left
open can abort the process at exit (SIGABRT, "terminate called without an active exception")
after the run itself succeeded.
"""

import atexit
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import torch.distributed as dist

from lightning_fed.federation.health import DeviceFailed, NonFiniteError
from lightning_fed.federation.hosting import hosted_devices

PR_SET_PDEATHSIG = 1  # prctl(2)


def exit_description(code: int) -> str:
    """How a process ended, from its ``Popen.returncode``.

    Example::

        >>> exit_description(-9), exit_description(1)
        ('was killed by signal 9 (SIGKILL)', 'exited with code 1')
    """
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


def close_process_group() -> None:
    """Destroy the default process group if one is open (a no-op otherwise).

    Example::

        >>> close_process_group()  # nothing open here: nothing to do
        >>> dist.is_initialized()
        False
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_closing_registered = False


def close_process_group_at_exit() -> None:
    """Have :func:`close_process_group` run at interpreter exit, once however often this is called.

    Gloo's worker threads may still hold work whose tensors refer to Python objects; destroying
    them during interpreter finalisation aborts the process (pytorch/pytorch#179291), so the group
    is destroyed while the interpreter is still whole.
    """
    global _closing_registered
    if not _closing_registered:
        atexit.register(close_process_group)
        _closing_registered = True


class ProcessWatchdog(threading.Thread):
    """Watches ``processes`` (``rank -> Popen``) from the launching process; see the module docstring.

    Args:
        processes: the device processes this process started, by global rank.
        describe: ``rank -> str``, what a rank hosts (``"devices 4-7"``), for the message.
        period: seconds between looks.
        grace: seconds a process that exited with an error code leaves the launcher to report it.
        stop: called with the message once a process is lost; the default prints it to stderr and
            kills every process of the run, this one last.
    """

    def __init__(
        self, processes: dict, describe: Callable[[int], str], period: float = 1.0, grace: float = 10.0,
        stop: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(daemon=True, name="lightning-fed-watchdog")
        self.processes, self.describe = dict(processes), describe
        self.period, self.grace = period, grace
        self.stop_run = stop or self._kill_all
        self._finished = threading.Event()
        self._failed_at: dict[int, float] = {}

    def run(self) -> None:
        while not self._finished.wait(self.period):
            message = self.lost()
            if message is not None:
                self.stop_run(message)
                return

    def finish(self) -> None:
        self._finished.set()

    def lost(self, now: float | None = None, grace: float | None = None) -> str | None:
        """The message for the first device process that is gone for good, or None.

        ``grace`` (default: the watchdog's) is how long one that exited with an error code has had;
        0 when this process has already failed in a collective with it.
        """
        now = time.monotonic() if now is None else now
        grace = self.grace if grace is None else grace
        for rank, process in sorted(self.processes.items()):
            code = process.poll()
            if not code:
                continue
            first = self._failed_at.setdefault(rank, now)
            if code < 0 or now - first >= grace:
                return (
                    f"lightning-fed: device process {rank} ({self.describe(rank)}) {exit_description(code)}; "
                    "stopping every process of the run (the last checkpoint is whole)"
                )
        return None

    def lost_within(self, seconds: float) -> str | None:
        """:meth:`lost` with no grace, looking again for up to ``seconds``: a killed process drops
        its connections a moment before it can be waited for."""
        deadline = time.monotonic() + seconds
        while (message := self.lost(grace=0.0)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return message

    def _kill_all(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent() -> bool:
    """Ask Linux to kill this process when its parent dies (``PR_SET_PDEATHSIG``); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)
    return True


class ProcessWatching:
    """The strategy's side of the watchdog: a lost device process stops the run, named."""

    _watchdog: ProcessWatchdog | None = None  # in the launching process of each node
    _watched = False

    def watch_processes(self) -> None:
        """Start watching the device processes this one launched (or die with the launcher);
        close the process group at exit."""
        close_process_group_at_exit()
        if self.world_size == 1 or self._watched:
            return
        self._watched = True
        started = getattr(self.launcher, "procs", None)  # the device processes this one launched
        if self.local_rank == 0 and started:
            first = self.node_rank * self.num_processes + 1
            processes = {first + i: process for i, process in enumerate(started)}
            self._watchdog = ProcessWatchdog(processes, self._describe_rank, grace=3.0)
            self._watchdog.start()
        elif self.local_rank != 0:
            die_with_parent()  # watched by its launcher, and gone with it

    def on_exception(self, exception: BaseException) -> None:
        """A collective that failed because a device process died: say which, in one line, and stop."""
        super().on_exception(exception)
        ours = (NonFiniteError, DeviceFailed, KeyboardInterrupt)
        if self._watchdog is not None and not isinstance(exception, ours):
            message = self._watchdog.lost_within(seconds=2.0)
            if message is not None:
                self._watchdog.stop_run(message)

    def _describe_rank(self, rank: int) -> str:
        """What ``rank`` was training: its block of hosted devices, or under the balanced placement
        its part of the last round's deal (the devices it hosts may be others)."""
        if self.placement_of_run == "balanced":
            if self.dealt is None:
                return "no round's devices dealt yet"
            step, dealt = self.dealt
            return f"{named_devices(dealt[rank])} of step {step}'s deal"
        return named_devices(hosted_devices(self._resolve_num_devices(), self.world_size, rank))


def named_devices(devices: list[int], shown: int = 4) -> str:
    """Devices in words: one, a contiguous block, or the first ``shown`` of a list and how many more.

    Example::

        >>> named_devices([5]), named_devices([4, 5, 6, 7]), named_devices([3, 9]), named_devices([])
        ('device 5', 'devices 4-7', 'devices 3, 9', 'no devices')
        >>> named_devices([1, 4, 9, 12, 30, 31])
        'devices 1, 4, 9, 12 and 2 more'
    """
    if not devices:
        return "no devices"
    if len(devices) == 1:
        return f"device {devices[0]}"
    if devices == list(range(devices[0], devices[-1] + 1)):
        return f"devices {devices[0]}-{devices[-1]}"
    listed = ", ".join(str(d) for d in devices[:shown])
    return f"devices {listed}" + (f" and {len(devices) - shown} more" if len(devices) > shown else "")
