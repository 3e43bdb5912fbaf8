"""Nodes that never join or stop answering are named on every other node within --node-timeout
seconds (the rendezvous and the heartbeats, with a clock of the test's)."""

from datetime import timedelta

import pytest
import torch.distributed as dist

from lightning_fed import FederatedStrategy
from lightning_fed.federation.node_watch import ALL_JOINED, NodeLost, NodeWatch, wait_for_nodes

RESUME = "(the last checkpoint is whole: start every node again with --resume)"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _watches(num_nodes: int, timeout: float = 10.0):
    store, clock = dist.HashStore(), Clock()
    watches = [NodeWatch(store, n, num_nodes, timeout, clock=clock) for n in range(num_nodes)]
    return store, clock, watches


def test_a_silent_node_is_named_once_its_heartbeat_has_not_moved_for_the_timeout():
    _, clock, (node0, node1, node2) = _watches(3)
    for watch in (node1, node2, node0):
        assert watch.look() is None
    clock.now = 9.0
    assert node2.look() is None and node0.look() is None  # node 1 silent for 9 s: not yet
    clock.now = 10.0
    assert "node 1 stopped answering" in node2.look()  # every other node names it
    assert node0.look() == (
        "lightning-fed: node 1 stopped answering (no heartbeat for 10 s, --node-timeout); "
        f"stopping node 0 {RESUME}"
    )


def test_a_node_that_finished_is_not_waited_for():
    _, clock, (node0, node1) = _watches(2)
    node1.look(), node0.look()
    node1.finish()
    clock.now = 100.0
    assert node0.look() is None


class FailingStore:
    """A store whose host (node 0) is gone: every call fails, as a TCPStore's does."""

    def add(self, key, value):
        raise RuntimeError("Connection reset by peer")

    check = set = add


def test_a_store_that_stops_answering_names_node_0_after_the_timeout():
    clock = Clock()
    node1 = NodeWatch(FailingStore(), node=1, num_nodes=2, timeout=5.0, clock=clock)
    clock.now = 4.9
    assert node1.look() is None
    clock.now = 5.0
    assert node1.look() == (
        "lightning-fed: node 0 stopped answering (its rendezvous store has not answered for 5 s, "
        f"--node-timeout); stopping node 1 {RESUME}"
    )
    node1.finish()  # nobody left to tell: no error


def test_the_rendezvous_names_the_nodes_still_missing_and_opens_when_every_process_signed_in():
    store = dist.HashStore()
    store.set("lightning_fed/nodes/joined/3", "1")  # process 3 (node 1) signed in; 1, 2 and 5 did not
    with pytest.raises(NodeLost) as error:
        wait_for_nodes(store, rank=0, world_size=6, processes_per_node=2, timeout=0.05)
    assert str(error.value) == (
        "lightning-fed: nodes 0, 1, 2 did not join within 0.05 s (--node-timeout; processes 1, 2, 4, 5 "
        "missing): no node trained"
    )
    for rank in (1, 2, 4, 5):
        store.set(f"lightning_fed/nodes/joined/{rank}", "1")
    wait_for_nodes(store, rank=0, world_size=6, processes_per_node=2, timeout=0.05)
    store.wait([ALL_JOINED], timedelta(seconds=1))  # the others' word
    wait_for_nodes(store, rank=4, world_size=6, processes_per_node=2, timeout=0.05)


def test_a_node_that_gets_no_word_from_node_0_says_so():
    with pytest.raises(
        NodeLost, match=r"^lightning-fed: not every node joined within 0.05 s \(--node-timeout"
    ):
        wait_for_nodes(dist.HashStore(), rank=1, world_size=2, processes_per_node=1, timeout=0.05)


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan"), True, "60"])
def test_a_node_timeout_that_is_not_a_positive_number_of_seconds_is_refused(seconds):
    with pytest.raises(ValueError, match=r"^node_timeout must be a finite number of seconds > 0, got "):
        FederatedStrategy(node_timeout=seconds)
