"""Nodes that never join or stop answering: one line naming the node, on every other node, within
``timeout`` seconds (``--node-timeout``).

A run over several machines meets at a rendezvous store (``MASTER_ADDR:MASTER_PORT``, hosted by
global rank 0, or by torchrun's agent). Every process signs in there (:func:`wait_for_nodes`);
process 0 waits at most ``timeout`` seconds for all of them and names the nodes still missing, the
others wait as long for its word. Then the first process of each node beats a counter in the
store every ``period`` seconds and reads the others' (:class:`NodeWatch`): a node whose counter
has not moved for ``timeout`` seconds, or a store that has not answered for as long (node 0 is
gone), stops this node with one line naming it. A killed process is also seen sooner, by its
peers' failed collective (:mod:`~lightning_fed.federation.watchdog` on its own node). A node that
finished says so, and is not waited for. Checkpoints are whole whenever a run stops, so every
node resumes with ``--resume``.

Example::

    >>> import torch.distributed as dist
    >>> store, clock = dist.HashStore(), [0.0]
    >>> node0 = NodeWatch(store, node=0, num_nodes=2, timeout=10, clock=lambda: clock[0])
    >>> node1 = NodeWatch(store, node=1, num_nodes=2, timeout=10, clock=lambda: clock[0])
    >>> node1.look(), node0.look()  # both beat; node 0 sees node 1's
    (None, None)
    >>> clock[0] = 11.0  # node 1 has gone silent since
    >>> print(node0.look().split("; ")[0])
    lightning-fed: node 1 stopped answering (no heartbeat for 10 s, --node-timeout)
"""

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist

from lightning_fed.federation.health import DeviceFailed, NonFiniteError

PREFIX = "lightning_fed/nodes/"
ALL_JOINED = PREFIX + "all-joined"
RESUME = "the last checkpoint is whole: start every node again with --resume"


def checked_node_timeout(seconds) -> float:
    """``seconds`` as a float, or a one-line error unless it is a finite number above 0.

    Example::

        >>> checked_node_timeout(30)
        30.0
        >>> checked_node_timeout(0)
        Traceback (most recent call last):
        ...
        ValueError: node_timeout must be a finite number of seconds > 0, got 0
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
        raise ValueError(f"node_timeout must be a finite number of seconds > 0, got {seconds!r}")
    return float(seconds)


class NodeLost(RuntimeError):
    """A node did not join, or stopped answering; the message is the one line to print."""


def _nodes(ranks: list[int], processes_per_node: int) -> str:
    """``node 1`` or ``nodes 1, 3`` for the processes ``ranks``.

    Example::

        >>> _nodes([2, 3, 6], processes_per_node=2)
        'nodes 1, 3'
    """
    nodes = sorted({rank // processes_per_node for rank in ranks})
    return ("node " if len(nodes) == 1 else "nodes ") + ", ".join(map(str, nodes))


def rendezvous_store(address: str, port: int, rank: int, world_size: int, timeout: float, host: bool):
    """The run's store at ``address:port``, hosted here when ``host``; a client that finds no host
    within ``timeout`` seconds raises :class:`NodeLost` naming node 0."""
    try:
        return dist.TCPStore(
            address, port, world_size, is_master=host, timeout=timedelta(seconds=timeout),
            wait_for_workers=False,
        )  # fmt: skip
    except (RuntimeError, TimeoutError) as error:  # torch's DistNetworkError / DistStoreError
        reason = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise NodeLost(
            f"lightning-fed: node 0 (the rendezvous at {address}:{port}) did not answer within {timeout:g} s "
            f"(--node-timeout): {reason}"
        ) from None


def wait_for_nodes(
    store, rank: int, world_size: int, processes_per_node: int, timeout: float, poll: float = 0.1
) -> None:
    """Sign in; return once every process has, else raise :class:`NodeLost` naming the missing
    nodes (process 0) or saying node 0 gave no word (the others), after ``timeout`` seconds.

    Example::

        >>> import torch.distributed as dist
        >>> store = dist.HashStore()
        >>> store.set("lightning_fed/nodes/joined/1", "1")  # process 1 (node 0) signed in
        >>> try:
        ...     wait_for_nodes(store, rank=0, world_size=4, processes_per_node=2, timeout=0.2)
        ... except NodeLost as error:
        ...     print(str(error).split(" (")[0])
        lightning-fed: node 1 did not join within 0.2 s
    """
    store.set(f"{PREFIX}joined/{rank}", "1")
    if rank != 0:
        try:
            store.wait([ALL_JOINED], timedelta(seconds=timeout))
        except (RuntimeError, TimeoutError):
            raise NodeLost(
                f"lightning-fed: not every node joined within {timeout:g} s (--node-timeout; node 0 names "
                "the missing ones): no node trained"
            ) from None
        return
    deadline = time.monotonic() + timeout
    while missing := [r for r in range(world_size) if not store.check([f"{PREFIX}joined/{r}"])]:
        if time.monotonic() >= deadline:
            raise NodeLost(
                f"lightning-fed: {_nodes(missing, processes_per_node)} did not join within {timeout:g} s "
                f"(--node-timeout; processes {', '.join(map(str, missing))} missing): no node trained"
            )
        time.sleep(poll)
    store.set(ALL_JOINED, "1")


class NodeWatch(threading.Thread):
    """The heartbeats of one node (its first process) and its look at the others'; see the module
    docstring. ``stop`` gets the message when a node is lost (default: print it and end this node's
    processes); ``clock`` is for tests."""

    def __init__(
        self, store, node: int, num_nodes: int, timeout: float, period: float = 1.0,
        stop: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        super().__init__(daemon=True, name="lightning-fed-node-watch")
        self.store, self.node, self.num_nodes = store, node, num_nodes
        self.timeout, self.period, self.clock = timeout, period, clock
        self.stop_node = stop or stop_this_node
        self._finished = threading.Event()
        self._seen: dict[int, tuple[int, float]] = {}  # node -> (its counter, when it last moved)
        self._answered = clock()  # when the store last answered

    def run(self) -> None:
        while not self._finished.wait(self.period):
            message = self.look()
            if message is not None and not self._finished.is_set():
                self.stop_node(message)
                return

    def look(self) -> str | None:
        """Beat once and read the others: the message for a lost node, or None."""
        now = self.clock()
        try:
            self.store.add(f"{PREFIX}alive/{self.node}", 1)
            others = [n for n in range(self.num_nodes) if n != self.node]
            beating = [n for n in others if not self.store.check([f"{PREFIX}done/{n}"])]
            counters = {n: self.store.add(f"{PREFIX}alive/{n}", 0) for n in beating}
        except (RuntimeError, TimeoutError):  # the store's host (node 0) does not answer
            if now - self._answered < self.timeout:
                return None
            return self._lost(0, f"its rendezvous store has not answered for {self.timeout:g} s")
        self._answered = now
        for n, counter in counters.items():
            last, since = self._seen.get(n, (None, now))
            if counter != last:
                self._seen[n] = (counter, now)
            elif now - since >= self.timeout:
                return self._lost(n, f"no heartbeat for {self.timeout:g} s")
        return None

    def finish(self) -> None:
        """This node is done: the others stop waiting for its heartbeat."""
        self._finished.set()
        with contextlib.suppress(RuntimeError, TimeoutError):  # node 0 gone: nobody is left to tell
            self.store.set(f"{PREFIX}done/{self.node}", "1")

    def _lost(self, node: int, why: str) -> str:
        return (
            f"lightning-fed: node {node} stopped answering ({why}, --node-timeout); "
            f"stopping node {self.node} ({RESUME})"
        )


def stop_this_node(message: str) -> None:
    """Print ``message`` and end this process at once (exit 1); its device processes die with it."""
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


class NodeWatching:
    """The strategy's side: across nodes, the rendezvous is checked and the node watched."""

    node_timeout: float = 60.0
    _node_watch: NodeWatch | None = None

    def setup_distributed(self) -> None:
        """Across nodes, meet at a store this class makes (so that a missing node is named), then
        let Lightning go on with the process group already open."""
        if self.num_nodes > 1 and not dist.is_initialized():
            self.set_world_ranks()
            env, rank, timeout = self.cluster_environment, self.global_rank, self.node_timeout
            host = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"  # torchrun's own
            store = rendezvous_store(env.main_address, env.main_port, rank, self.world_size, timeout, host)
            wait_for_nodes(store, rank, self.world_size, self.num_processes, timeout)
            backend = self.process_group_backend or ("nccl" if self.root_device.type == "cuda" else "gloo")
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=self.world_size, timeout=self._timeout
            )
            if self.local_rank == 0:
                self._node_watch = NodeWatch(store, self.node_rank, self.num_nodes, timeout)
                self._node_watch.start()
        super().setup_distributed()

    def on_exception(self, exception: BaseException) -> None:
        """A collective that failed across nodes: give the watch the time it needs to name the lost
        node (it then stops this one); an error of this node's own goes on as it is."""
        super().on_exception(exception)
        watch = self._node_watch
        own = (NonFiniteError, DeviceFailed)  # raised on every node at the same step: nobody is lost
        if (
            watch is not None
            and isinstance(exception, (RuntimeError, OSError))
            and not isinstance(exception, own)
        ):
            watch.join(watch.timeout + 2 * watch.period)

    def teardown(self) -> None:
        if self._node_watch is not None:
            self._node_watch.finish()
            self._node_watch = None
        super().teardown()
