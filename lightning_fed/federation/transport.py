"""How messages travel between the devices and the server, within a process or across processes.

A transport carries typed messages (:mod:`lightning_fed.federation.messages`) and is the only
writer of the ledger's traffic: it counts each message when it is read, from its bytes alone,
both directions, and the bytes its collectives between processes carry (``transport_bytes``).
Every transport gives the server the same thing: the weighted sum of every device's decoded
upload.

- :class:`InProcess`: one process hosts every device; uploads are decoded as they arrive.
- :class:`AllReduce` (``transport="dense"``): each process sums its devices' decoded uploads, then
  one all-reduce of the sums (and of the counters) across processes.
- :class:`AllGather` (``transport="sparse"``): the messages themselves travel; every process
  decodes all of them, in device order (the sum is the same bit for bit as in one process).

The server's messages (downloads) are computed the same in every process; each process's
transport reads and counts them once per receiving device, so every process's ledger holds the
whole federation's traffic. A message to one device of its own (the change from its copy) is read
by the process hosting that device only; the processes add up those counts once a round
(``settle_own_downloads``).
"""

import struct

import torch
import torch.distributed as dist

from lightning_fed.communication import Codec, CommunicationLedger, Payload, Traffic
from lightning_fed.federation.aggregation import RunningSum
from lightning_fed.federation.health import first_non_finite
from lightning_fed.federation.messages import UPDATE, Message, read

TRANSPORTS = ("dense", "sparse")
_HEAD = struct.Struct("<qqdI")  # an update's sender, round, weight and payload bytes


class InProcess:
    """All devices in this process.

    Example::

        >>> from lightning_fed.communication import SparseCodec
        >>> from lightning_fed.federation.messages import SERVER, UPDATE, Message
        >>> codec, ledger = SparseCodec(), CommunicationLedger()
        >>> transport = InProcess(codec, numels=[2], ledger=ledger)
        >>> transport.upload(Message(UPDATE, 0, 0, codec.encode([torch.tensor([1.0, 0.0])])))
        >>> transport.upload(Message(UPDATE, 1, 0, codec.encode([torch.tensor([3.0, 0.0])])))
        >>> transport.server_sum()
        ([tensor([4., 0.])], 2.0)
        >>> average = Message("average", SERVER, 0, codec.encode([torch.tensor([2.0, 0.0])]))
        >>> transport.download(average, codec, receivers=2)
        [tensor([2., 0.])]
        >>> traffic = ledger.pending
        >>> traffic.upload, traffic.upload_bytes, traffic.download, traffic.download_bytes
        (2, 20, 2, 20)
    """

    def __init__(
        self,
        codec: Codec,
        numels: list[int],
        ledger: CommunicationLedger | None = None,
        keep_updates: bool = False,
    ) -> None:
        self.codec, self.numels = codec, numels
        self.ledger = ledger if ledger is not None else CommunicationLedger()
        self.keep_updates = keep_updates  # each update for the server, not only their sum
        self._begin()

    def _begin(self) -> None:
        self._sum, self._traffic = RunningSum(), Traffic()
        self._updates: list[tuple[int, list[torch.Tensor], float]] = []

    def upload(self, message: Message) -> None:
        """A device's update on its way to the server."""
        self._receive(message)

    def _receive(self, message: Message) -> None:
        """The server reads one device's update: decoded, counted from its bytes, added."""
        tensors, traffic = read(message, self.codec, self.numels)
        self._traffic += traffic
        if self.keep_updates:
            self._updates.append((message.sender, tensors, message.weight))
        else:
            self._sum.add(tensors, message.weight)

    def server_sum(self) -> tuple[list[torch.Tensor] | None, float]:
        """The round's weighted sum (None: nobody reported) and total weight, its traffic in the
        ledger; the next round starts empty."""
        return self._take()

    def _take(self) -> tuple[list[torch.Tensor] | None, float]:
        self.ledger.record(self._traffic)
        result = (self._sum.tensors, self._sum.weight)
        self._begin()
        return result

    def server_updates(self) -> list[tuple[int, list[torch.Tensor], float]]:
        """The round's ``(sender, decoded update, weight)`` in device order (``keep_updates``), their
        traffic in the ledger; the next round starts empty."""
        self.ledger.record(self._traffic)
        updates = sorted(self._updates, key=lambda item: item[0])
        self._begin()
        return updates

    def download(self, message: Message, codec: Codec, receivers: int, numels: list[int] | None = None):
        """The server's ``message`` as each of ``receivers`` devices reads it with ``codec``: its
        tensors, counted once per receiver."""
        tensors, traffic = read(message, codec, numels or self.numels, receivers)
        self.ledger.record(traffic)
        return tensors

    def download_to_one(self, message: Message, codec: Codec, numels: list[int] | None = None):
        """The server's ``message`` to one device hosted here, a message of its own (the change from
        that device's copy, :mod:`~lightning_fed.federation.downlink`): read and counted once."""
        return self.download(message, codec, 1, numels)

    def settle_own_downloads(self) -> None:
        """Called once a round by every process where devices get messages of their own: in one
        process they are in the ledger already."""

    def first_non_finite(self, found: tuple[int, str] | None, num_devices: int, device=None):
        """The lowest device of the round with a non-finite loss or update, over every process."""
        return first_non_finite(found, num_devices, device)


class Collective(InProcess):
    """What every transport across processes shares: the collectives' bytes counted, the devices'
    own downloads and the non-finite check agreed across processes."""

    def __init__(self, codec: Codec, numels: list[int], ledger=None, keep_updates=False, group=None) -> None:
        super().__init__(codec, numels, ledger, keep_updates)
        self.group = group
        self._own_downloads = Traffic()  # this process's messages to its own devices, this round
        # NCCL moves only GPU tensors; gloo moves CPU tensors
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def _moved(self, nbytes: int) -> None:
        """A collective to which every process handed ``nbytes``."""
        self.ledger.record(Traffic(transport_bytes=dist.get_world_size(self.group) * nbytes))

    def download_to_one(self, message: Message, codec: Codec, numels: list[int] | None = None):
        """As in one process, but counted when the round settles: only this process read it."""
        tensors, traffic = read(message, codec, numels or self.numels, 1)
        self._own_downloads += traffic
        return tensors

    def settle_own_downloads(self) -> None:
        """Every process's downloads to its own devices, summed across processes into every ledger
        (a collective: every process calls it once a round)."""
        own = self._own_downloads
        counts = torch.tensor([own.download, own.download_bytes], dtype=torch.int64, device=self.device)
        dist.all_reduce(counts, group=self.group)
        self._moved(16)
        self.ledger.record(Traffic(download=int(counts[0]), download_bytes=int(counts[1])))
        self._own_downloads = Traffic()

    def first_non_finite(self, found, num_devices, device=None):
        agreed = first_non_finite(found, num_devices, device, self.group)
        self._moved(8)  # one int64 all-reduced
        return agreed


class AllReduce(Collective):
    """Sums per process, then one all-reduce across processes (no update is seen alone)."""

    def __init__(self, codec: Codec, numels: list[int], ledger=None, keep_updates=False, group=None) -> None:
        if keep_updates:
            raise ValueError(
                "the server needs each device's update (a robust aggregator or the mask check); across "
                "processes use transport='sparse', which carries every message, not transport='dense'"
            )
        super().__init__(codec, numels, ledger, keep_updates, group)

    def _take(self):
        tensors, weight, traffic = self._sum.tensors, self._sum.weight, self._traffic
        self._begin()
        flat = torch.cat(tensors) if tensors is not None else torch.zeros(sum(self.numels))
        flat = flat.to(self.device)
        counters = torch.tensor([traffic.upload, traffic.upload_bytes], dtype=torch.int64, device=self.device)
        weights = torch.tensor([weight], dtype=torch.float64, device=self.device)
        for tensor in (flat, counters, weights):
            dist.all_reduce(tensor, group=self.group)
        flat = flat.cpu()
        self._moved(flat.numel() * flat.element_size() + 16 + 8)
        self.ledger.record(Traffic(upload=int(counters[0]), upload_bytes=int(counters[1])))
        return list(flat.split(self.numels)), float(weights[0])


class AllGather(Collective):
    """The messages cross processes: all-gathered (padded to the longest process's), read everywhere."""

    def _begin(self) -> None:
        super()._begin()
        self._outbox: list[bytes] = []

    def upload(self, message: Message) -> None:
        self._outbox.append(_HEAD.pack(message.sender, message.round, message.weight, len(message)))
        self._outbox.append(message.payload.data)

    def server_sum(self):
        self._gather()
        return self._take()

    def server_updates(self):
        self._gather()
        return super().server_updates()

    def _gather(self) -> None:
        """Every process's messages, read here in device order."""
        parts, moved = all_gather_bytes(b"".join(self._outbox), self.group, self.device)
        self._moved(moved // dist.get_world_size(self.group))
        received = [message for part in parts for message in _unpack(part)]
        for message in sorted(received, key=lambda message: message.sender):  # device order
            self._receive(message)


def all_gather_bytes(mine: bytes, group=None, device: torch.device | None = None) -> tuple[list[bytes], int]:
    """Every process's ``mine`` (empty where a process has nothing to send), in rank order, and the
    bytes the collectives carried: every process's length, and its buffer padded to the longest."""
    on = device or torch.device("cpu")
    data = torch.frombuffer(bytearray(mine), dtype=torch.uint8) if mine else torch.zeros(0, dtype=torch.uint8)
    world = dist.get_world_size(group)
    lengths = [torch.zeros(1, dtype=torch.int64, device=on) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([data.numel()], device=on), group=group)
    longest = int(max(int(n) for n in lengths))
    padded = torch.zeros(longest, dtype=torch.uint8, device=on)
    padded[: data.numel()] = data.to(on)
    gathered = [torch.empty(longest, dtype=torch.uint8, device=on) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    parts = [b[: int(n)].cpu().numpy().tobytes() for b, n in zip(gathered, lengths, strict=True)]
    return parts, world * (8 + longest)


def _unpack(data: bytes) -> list[Message]:
    out, offset = [], 0
    while offset < len(data):
        sender, round, weight, nbytes = _HEAD.unpack_from(data, offset)
        offset += _HEAD.size
        out.append(Message(UPDATE, sender, round, Payload(data[offset : offset + nbytes]), weight))
        offset += nbytes
    return out


def make_transport(
    kind: str, codec: Codec, numels: list[int], world_size: int, ledger=None, keep_updates: bool = False
):
    """The transport of a run of ``world_size`` processes (in-process when there is one), writing
    ``ledger``; with ``keep_updates`` it hands the server each update."""
    if kind not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {kind!r}")
    if world_size == 1:
        return InProcess(codec, numels, ledger, keep_updates)
    return (AllReduce if kind == "dense" else AllGather)(codec, numels, ledger, keep_updates)
