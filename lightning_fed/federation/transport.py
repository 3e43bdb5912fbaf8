"""How the devices' payloads reach the server, within a process or across processes and nodes.

Every transport gives the server the same thing: the weighted sum of every device's decoded
upload, and the upload traffic of all devices. ``moved_bytes`` is what the collectives between
processes carried in the last round (the sum over processes of the buffers each one handed in).

- :class:`InProcess`: one process hosts every device; payloads are decoded as they arrive.
- :class:`AllReduce` (``transport="dense"``): each process sums its devices' decoded uploads, then
  one all-reduce of the sums (and of the counters) across processes.
- :class:`AllGather` (``transport="sparse"``): the payloads themselves travel; every process
  decodes all of them, in device order (the sum is the same bit for bit as in one process).
"""

import struct

import torch
import torch.distributed as dist

from lightning_fed.communication import Codec, Payload, Traffic
from lightning_fed.federation.aggregation import RunningSum

TRANSPORTS = ("dense", "sparse")
_LENGTH = struct.Struct("<qdI")  # device, weight, payload bytes


class InProcess:
    """All devices in this process.

    Example::

        >>> from lightning_fed.communication import SparseCodec
        >>> transport = InProcess(SparseCodec(), numels=[2])
        >>> codec = SparseCodec()
        >>> transport.upload(0, codec.encode([torch.tensor([1.0, 0.0])]))
        >>> transport.upload(1, codec.encode([torch.tensor([3.0, 0.0])]))
        >>> total, weight, traffic = transport.server_sum()
        >>> total, weight, traffic.upload, traffic.upload_bytes
        ([tensor([4., 0.])], 2.0, 2, 20)
    """

    def __init__(self, codec: Codec, numels: list[int]) -> None:
        self.codec, self.numels = codec, numels
        self.moved_bytes = 0
        self._begin()

    def _begin(self) -> None:
        self._sum, self._traffic = RunningSum(), Traffic()

    def upload(self, device: int, payload: Payload, weight: float = 1.0) -> None:
        self._receive(payload, weight)

    def _receive(self, payload: Payload, weight: float) -> None:
        """The server reads one device's payload: counted, decoded, added."""
        self._traffic += Traffic.of_upload(payload)
        self._sum.add(self.codec.decode(payload, self.numels), weight)

    def server_sum(self) -> tuple[list[torch.Tensor], float, Traffic]:
        """The round's weighted sum, total weight and upload traffic; the next round starts empty."""
        return self._take()

    def _take(self) -> tuple[list[torch.Tensor], float, Traffic]:
        result = (self._sum.tensors, self._sum.weight, self._traffic)
        self._begin()
        return result


class _Collective(InProcess):
    def __init__(self, codec: Codec, numels: list[int], group=None) -> None:
        super().__init__(codec, numels)
        self.group = group
        # NCCL moves only GPU tensors; gloo moves CPU tensors
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


class AllReduce(_Collective):
    """Sums per process, then one all-reduce across processes."""

    def server_sum(self):
        tensors, weight, traffic = super().server_sum()
        flat = torch.cat(tensors) if tensors is not None else torch.zeros(sum(self.numels))
        flat = flat.to(self.device)
        counters = torch.tensor([traffic.upload, traffic.upload_bytes], dtype=torch.int64, device=self.device)
        weights = torch.tensor([weight], dtype=torch.float64, device=self.device)
        for tensor in (flat, counters, weights):
            dist.all_reduce(tensor, group=self.group)
        flat = flat.cpu()
        world = dist.get_world_size(self.group)
        self.moved_bytes = world * (flat.numel() * flat.element_size() + 16 + 8)
        traffic = Traffic(upload=int(counters[0]), upload_bytes=int(counters[1]))
        return list(flat.split(self.numels)), float(weights[0]), traffic


class AllGather(_Collective):
    """The payloads cross processes: all-gathered (padded to the longest process's), decoded everywhere."""

    def _begin(self) -> None:
        super()._begin()
        self._outbox: list[bytes] = []

    def upload(self, device: int, payload: Payload, weight: float = 1.0) -> None:
        self._outbox.append(_LENGTH.pack(device, weight, len(payload)) + struct.pack("<q", payload.values))
        self._outbox.append(payload.data)

    def server_sum(self):
        outbox = bytearray(b"".join(self._outbox))  # empty when no device here reported this round
        mine = torch.frombuffer(outbox, dtype=torch.uint8) if outbox else torch.zeros(0, dtype=torch.uint8)
        world, on = dist.get_world_size(self.group), self.device
        lengths = [torch.zeros(1, dtype=torch.int64, device=on) for _ in range(world)]
        dist.all_gather(lengths, torch.tensor([mine.numel()], device=on), group=self.group)
        longest = int(max(int(n) for n in lengths))
        padded = torch.zeros(longest, dtype=torch.uint8, device=on)
        padded[: mine.numel()] = mine.to(on)
        gathered = [torch.empty(longest, dtype=torch.uint8, device=on) for _ in range(world)]
        dist.all_gather(gathered, padded, group=self.group)
        gathered = [buffer.cpu() for buffer in gathered]
        self.moved_bytes = world * (8 + longest)
        received = []
        for buffer, length in zip(gathered, lengths, strict=True):
            received += _unpack(buffer[: int(length)].numpy().tobytes())
        for _, weight, payload in sorted(received, key=lambda item: item[0]):  # device order
            self._receive(payload, weight)
        return self._take()


def _unpack(data: bytes) -> list[tuple[int, float, Payload]]:
    out, offset = [], 0
    while offset < len(data):
        device, weight, nbytes = _LENGTH.unpack_from(data, offset)
        (values,) = struct.unpack_from("<q", data, offset + _LENGTH.size)
        offset += _LENGTH.size + 8
        out.append((device, weight, Payload(data[offset : offset + nbytes], values)))
        offset += nbytes
    return out


def make_transport(kind: str, codec: Codec, numels: list[int], world_size: int):
    """The transport of a run of ``world_size`` processes (in-process when there is one)."""
    if kind not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {kind!r}")
    if world_size == 1:
        return InProcess(codec, numels)
    return AllReduce(codec, numels) if kind == "dense" else AllGather(codec, numels)
