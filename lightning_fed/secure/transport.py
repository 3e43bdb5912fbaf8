"""The transport of a round under secure aggregation: the server gets the sum, never an upload.

Each device's update leaves it as float32 through the upload way (masked by ``M(alpha)``, clipped
under DP) and is read on the device's side into fixed-point words (:mod:`.fixed_point`); the round's
sampled devices then run SecAgg+ (:mod:`.secagg`) and the server reads the sum of the words of those
that reported. What the ledger counts is what SecAgg+ sent, every kind of message at its length:
the masked words up, and the keys, the encrypted shares and the unmasking, both ways. The round's
devices that did not report (``failure_rate``) shared their keys and fell silent: their masks are
removed. With ``late_failure_rate`` each device that sent its masked words falls silent before the
unmasking with that chance (seeded by the round): its input counts, its shares of others are
missing. The downloads travel as without it.

Across processes (:class:`SecureCollective`) each process masks the inputs of the devices it
hosts and adds them up; the processes learn who reported (their ids all-gathered), all-reduce the
partial masked sums (a sum of masked inputs is masked: no process sees another's upload), and each
unmasks the same total, drawing every device's keys and shares from the run's seed as one process
does. The model and the ledger are those of one process, bit for bit; the collectives' bytes are
``transport_bytes``.

Example::

    >>> import torch
    >>> from lightning_fed.communication import SparseCodec
    >>> from lightning_fed.federation.messages import UPDATE, Message
    >>> from lightning_fed.secure.secagg import SecAggPlus
    >>> codec = SparseCodec()
    >>> transport = SecureTransport(codec, [2], SecAggPlus(3, 2, seed=0), value_range=4.0, max_devices=4)
    >>> transport.begin_round([0, 1, 2, 3], keeps=None, step=0, seed=0)
    >>> for device in (0, 1, 2):  # device 3 fell silent
    ...     transport.upload(Message(UPDATE, device, 0, codec.encode([torch.tensor([device, -1.0])])))
    >>> total, reported = transport.server_sum()
    >>> [round(v, 5) for v in total[0].tolist()], reported
    ([3.0, -3.0], 3.0)
    >>> sorted(transport.bytes_by_kind)[:3]
    ['keys/down', 'keys/up', 'masked/up']
"""

import numpy as np
import torch
import torch.distributed as dist

from lightning_fed.communication import Traffic
from lightning_fed.federation.transport import Collective, InProcess
from lightning_fed.secure.fixed_point import FixedPoint
from lightning_fed.secure.options import SUPPORTS
from lightning_fed.secure.secagg import SecAggPlus
from lightning_fed.secure.support import count_bits, pack_support, packed_length, union_keeps, unpack_counts


class SecureTransport(InProcess):
    """One process's round, summed by ``protocol`` over words of ``FixedPoint(value_range, max_devices)``;
    ``support``: what the values are summed over where no public mask says (``dense``: every
    coordinate; ``union``: the coordinates any reporting device kept, :mod:`.support`)."""

    def __init__(
        self,
        codec,
        numels: list[int],
        protocol: SecAggPlus,
        value_range: float,
        max_devices: int,
        ledger=None,
        late_failure_rate: float = 0.0,
        support: str = "dense",
    ) -> None:
        super().__init__(codec, numels, ledger)
        if support not in SUPPORTS:
            raise ValueError(f"secagg_support must be one of {', '.join(SUPPORTS)}, got {support!r}")
        self.protocol, self.late_failure_rate, self.support = protocol, late_failure_rate, support
        self.point = FixedPoint(value_range, max_devices)
        self.count_bits = count_bits(max_devices)  # a field of the union's count
        self.bytes_by_kind: dict[str, int] = {}  # every round's SecAgg+ messages, by kind and direction
        self._devices: list[int] = []
        self._inputs: dict[int, list[torch.Tensor]] = {}

    def begin_round(self, devices: list[int], keeps, step: int, seed) -> None:
        """Round ``step``'s sampled ``devices``; ``keeps``: the public ``M(alpha)`` (Algorithm 1)
        whose kept coordinates alone are summed, or None (the ``support``'s coordinates)."""
        self._devices, self._keeps, self._step, self._seed = list(devices), keeps, step, seed
        self._inputs = {}

    def upload(self, message) -> None:
        """A device's update, read on its side (the server never reads it): its words are made
        there when the round's support is known."""
        if message.weight != 1.0:
            raise ValueError("secure aggregation sums updates of weight 1 (aggregation='mean')")
        self._inputs[message.sender] = self.codec.decode(message.payload, self.numels)

    def server_sum(self) -> tuple[list[torch.Tensor] | None, float]:
        """SecAgg+ among the round's devices: the sum of the reported updates and their count."""
        if not self._any_reported():
            return None, 0.0
        late = []
        if self.late_failure_rate:
            draws = np.random.default_rng((self._seed, self._step, 7)).random(len(self._devices))
            late = [d for d, u in zip(self._devices, draws, strict=True) if u < self.late_failure_rate]
        keeps, sent = self._keeps, 0
        if keeps is None and self.support == "union":
            keeps, sent = self._union(late)
        words = {
            d: self.point.encode(tensors, keeps, (self._seed, d, self._step))
            for d, tensors in self._inputs.items()
        }
        length = self.point.length(keeps, self.numels)
        outcome = self._secure_sum(words, late, length, stream=0, prefix="")
        total = self.point.decode(outcome.total, keeps, self.numels)
        self.ledger.record(Traffic(upload=sent + length * len(outcome.reported)))
        self._inputs = {}
        return total, float(len(outcome.reported))

    def _union(self, late: list[int]) -> tuple[list[torch.Tensor], int]:
        """The coordinates any reporting device kept, from a secure sum of their packed support
        indicators (its own keys: another stream); and the words each sent for it."""
        bits = self.count_bits
        packed = {d: pack_support(tensors, bits) for d, tensors in self._inputs.items()}
        length = packed_length(sum(self.numels), bits)
        outcome = self._secure_sum(packed, late, length, stream=1, prefix="support ")
        counts = unpack_counts(outcome.total, bits, sum(self.numels))
        return union_keeps(counts, self.numels), length * len(outcome.reported)

    def _secure_sum(self, inputs: dict, late: list[int], length: int, stream: int, prefix: str):
        """One SecAgg+ sum of ``inputs`` (words of ``length``) among the round's devices, its
        messages in the ledger and in :attr:`bytes_by_kind` (kinds named with ``prefix``)."""
        outcome = self.protocol.run(
            self._devices, inputs, step=self._step, silent_after_masking=late,
            reported=self._reported(), add_across=self._adder(length), stream=stream,
        )  # fmt: skip
        for kind, size in outcome.bytes.items():
            self.bytes_by_kind[prefix + kind] = self.bytes_by_kind.get(prefix + kind, 0) + size
        up = sum(size for kind, size in outcome.bytes.items() if kind.endswith("/up"))
        down = sum(size for kind, size in outcome.bytes.items() if kind.endswith("/down"))
        self.ledger.record(Traffic(upload_bytes=up, download_bytes=down))
        return outcome

    def server_updates(self):
        raise ValueError("under secure aggregation the server holds no single update (only their sum)")

    def _any_reported(self) -> bool:
        return bool(self._inputs)

    def _reported(self) -> list[int] | None:
        """Every reporting device (None: those whose inputs are here)."""
        return None

    def _adder(self, length: int):
        """How the partial masked sums of words of ``length`` are added across processes (None:
        one process, its masked sum is the round's)."""
        return None


class SecureCollective(SecureTransport, Collective):
    """The secure round across processes: each hosts some of the round's devices (module docstring)."""

    def server_sum(self):
        self._everyone = self._gather_reported()
        return super().server_sum()

    def _any_reported(self) -> bool:
        return bool(self._everyone)

    def _reported(self) -> list[int]:
        return self._everyone

    def _gather_reported(self) -> list[int]:
        """The ids of every process's devices that reported this round, sorted."""
        world, on = dist.get_world_size(self.group), self.device
        mine = torch.tensor(sorted(self._inputs), dtype=torch.int64, device=on)
        counts = [torch.zeros(1, dtype=torch.int64, device=on) for _ in range(world)]
        dist.all_gather(counts, torch.tensor([mine.numel()], device=on), group=self.group)
        longest = int(max(int(n) for n in counts))
        padded = torch.full((longest,), -1, dtype=torch.int64, device=on)
        padded[: mine.numel()] = mine
        gathered = [torch.empty(longest, dtype=torch.int64, device=on) for _ in range(world)]
        dist.all_gather(gathered, padded, group=self.group)
        self._moved(8 + 8 * longest)
        return sorted(int(d) for ids in gathered for d in ids.cpu().tolist() if d >= 0)

    def _adder(self, length: int):
        def add_across(total: np.ndarray | None, sent: int) -> tuple[np.ndarray, int]:
            """Every process's partial masked sum (None: it hosts no reporting device) and bytes
            sent, added: the masked sum of the round, modulo 2^32."""
            mine = np.zeros(length, dtype=np.int64) if total is None else total.astype(np.int64)
            both = torch.from_numpy(np.append(mine, sent)).to(self.device)
            dist.all_reduce(both, group=self.group)  # P partial sums < P * 2^32: no int64 overflow
            self._moved(both.numel() * 8)
            both = both.cpu().numpy()
            return (both[:-1] % 2**32).astype(np.uint32), int(both[-1])

        return add_across
