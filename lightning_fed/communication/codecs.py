"""Codecs: what a device uploads and the server sends back, as real bytes.

A message is the list of tensors one side sends (flat float32, one per shared parameter, in the
order both sides know from the :class:`~lightning_fed.federation.SharingPlan`). A codec turns it
into a :class:`Payload` (a byte string) and the receiver reads the tensors back from those bytes
alone, and counts from them what the ledger records (:meth:`Codec.read`): ``len(payload)``,
header included, and the float values the payload carries (the paper's measure).

:class:`SparseCodec` writes each tensor as one segment, ``tag (1 byte) | count (uint32) |
positions | values``, the positions in the cheapest of its encodings (sizes are exact, computed
before anything is written; with float32 values):

- ``dense``: no positions, every entry's value, ``4 * numel`` bytes (count = numel);
- ``indices``: int32 positions and the values, ``8 * count``;
- ``bitmap``: a presence bit per entry and the values, ``ceil(numel / 8) + 4 * count``;
- ``rice``: Rice-coded gaps between positions (:mod:`lightning_fed.communication.rice`), a byte of
  ``k``, a uint32 stream length, the stream and the values.

The values are written by a value coder (:mod:`lightning_fed.communication.values`: float32, the
default and lossless; fp16; QSGD at 8, 4 or 2 bits; sign), after optional filters such as top-k
(:mod:`lightning_fed.communication.topk`); :func:`~lightning_fed.communication.make_codec` builds
one from a spec such as ``"topk:0.01+qsgd:8"``. An all-zero tensor costs its 5-byte header.
Entries that are exactly zero travel as absent.

Example::

    >>> codec = SparseCodec()
    >>> tensors = [torch.tensor([0.0, 2.0, 0.0, -1.0]), torch.zeros(1000)]
    >>> payload = codec.encode(tensors)
    >>> len(payload), codec.last_encodings  # 5 + 1 + 8 bytes, then a 5-byte header
    (19, ['bitmap', 'empty'])
    >>> decoded, values = codec.read(payload, [4, 1000])  # the receiver counts 2 values
    >>> [t.tolist()[:4] for t in decoded], values
    ([[0.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]], 2)
"""

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from lightning_fed.communication.rice import (
    best_k,
    gaps_of,
    rice_bits,
    rice_encode,
    rice_positions,
    unary_stream,
)
from lightning_fed.communication.values import Float32, ValueCoder

HEADER = struct.Struct("<BI")  # tag, count
FLOAT = np.dtype("<f4")
INDEX = np.dtype("<i4")


@dataclass(frozen=True)
class Payload:
    """The bytes of one message: all that travels, all the receiver counts."""

    data: bytes

    def __len__(self) -> int:
        return len(self.data)


class Codec(ABC):
    """Turns a message (a list of flat tensors) into a :class:`Payload` and back.

    Implement ``encode`` and ``decode`` to plug in another compressor; the receiver knows
    ``numels``. A codec whose decode may differ from its input says ``lossy = True`` (error
    feedback needs one). :meth:`read` is what a receiver calls: the tensors and the float values
    the bytes carry, which by default are the decoded entries that are not zero.
    """

    lossy = False  # what decode gives back may differ from what was encoded

    @abstractmethod
    def encode(self, tensors: list[torch.Tensor], *, step: int = 0, seed=0) -> Payload:
        """``step``: the training step (for schedules); ``seed``: of any random rounding."""

    @abstractmethod
    def decode(self, payload: Payload, numels: list[int]) -> list[torch.Tensor]: ...

    def read(self, payload: Payload, numels: list[int]) -> tuple[list[torch.Tensor], int]:
        """The tensors of ``payload`` and the number of values it carries, from its bytes alone."""
        tensors = self.decode(payload, numels)
        return tensors, sum(int(torch.count_nonzero(t)) for t in tensors)


class Support:
    """Where a flat float32 tensor is non-zero, each view computed only when an encoding asks.

    Example::

        >>> support = Support(np.array([0.0, 2.0, 0.0, -1.0, 0.0], dtype=np.float32))
        >>> support.count, support.positions.tolist(), support.gaps.tolist(), support.end
        (2, [1, 3], [1, 1], 4)
    """

    def __init__(self, dense: np.ndarray, present: np.ndarray | None = None) -> None:
        self.dense = dense
        self.numel = dense.size
        self.present = dense != 0 if present is None else present
        self.count = int(np.count_nonzero(self.present))

    @cached_property
    def positions(self) -> np.ndarray:
        return np.flatnonzero(self.present)

    @cached_property
    def gaps(self) -> np.ndarray:
        return gaps_of(self.positions)

    @cached_property
    def end(self) -> int:
        """One past the last non-zero entry."""
        if not self.count:
            return 0
        if self.present[-1]:  # the common case of a dense-ish tensor, without a pass over it
            return self.numel
        return int(self.numel - np.argmax(self.present[::-1]))

    @cached_property
    def values(self) -> np.ndarray:
        return self.dense[self.present]


class Encoding(ABC):
    """One way to write where a tensor's kept entries are (the positions part of a segment)."""

    name: str
    tag: int

    @abstractmethod
    def size(self, support: Support) -> int | None:
        """Exact bytes of the positions, or None where this encoding cannot write the tensor."""

    @abstractmethod
    def write(self, support: Support) -> list:
        """The positions as a list of bytes-like chunks (joined once, by the codec)."""

    @abstractmethod
    def read(self, view: memoryview, count: int, numel: int) -> tuple[np.ndarray | None, int]:
        """Where the ``count`` values go (None: every entry; else indices or a bool mask) and the
        bytes consumed."""


class Dense(Encoding):
    name, tag = "dense", 1

    def size(self, support):
        return 0

    def write(self, support):
        return []

    def read(self, view, count, numel):
        return None, 0


class Indices(Encoding):
    name, tag = "indices", 2

    def size(self, support):
        return 4 * support.count if support.numel < 2**31 else None

    def write(self, support):
        return [support.positions.astype(INDEX)]

    def read(self, view, count, numel):
        return np.frombuffer(view, INDEX, count), 4 * count


class Bitmap(Encoding):
    name, tag = "bitmap", 3

    def size(self, support):
        return -(-support.numel // 8)

    def write(self, support):
        return [np.packbits(support.present)]

    def read(self, view, count, numel):
        nbytes = -(-numel // 8)
        return np.unpackbits(np.frombuffer(view, np.uint8, nbytes), count=numel).view(bool), nbytes


class Rice(Encoding):
    name, tag = "rice", 4
    _HEAD = struct.Struct("<BI")  # k, stream bytes

    def size(self, support):
        return self._HEAD.size + -(-self._bits(support) // 8)

    def write(self, support):
        k = self._k(support)
        stream = unary_stream(support.present, support.end) if k == 0 else rice_encode(support.gaps, k)
        return [self._HEAD.pack(k, len(stream)), stream]

    def read(self, view, count, numel):
        k, nbytes = self._HEAD.unpack_from(view)
        start = self._HEAD.size
        return rice_positions(bytes(view[start : start + nbytes]), count, k), start + nbytes

    @staticmethod
    def _k(support: Support) -> int:
        # At half density or more k = 0 is optimal: any k >= 1 costs at least 2 * count >= numel
        # bits, and k = 0 costs sum(gaps) + count = end <= numel; no gaps needed to know it.
        return 0 if 2 * support.count >= support.numel else best_k(support.gaps)

    def _bits(self, support: Support) -> int:
        k = self._k(support)
        return support.end if k == 0 else rice_bits(support.gaps, k)


DENSE = Dense()
ENCODINGS: dict[str, Encoding] = {e.name: e for e in (DENSE, Indices(), Bitmap(), Rice())}
_BY_TAG: dict[int, Encoding] = {e.tag: e for e in ENCODINGS.values()}
EMPTY_TAG = 0


def _place(numel: int, where: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """A writable dense array of ``numel`` entries with ``values`` at ``where`` (None: all)."""
    if where is None:
        return values if values.flags.writeable else values.copy()
    out = np.zeros(numel, dtype=FLOAT)
    out[where] = values
    return out


class SparseCodec(Codec):
    """Each tensor's positions in the cheapest of ``encodings``, its values by ``values``.

    Args:
        encodings: names from ``dense``, ``indices``, ``bitmap``, ``rice``; the default is all four.
        values: the :class:`~lightning_fed.communication.values.ValueCoder` of the kept values
            (default float32: lossless).
        filters: applied first, in order, to each flat tensor: e.g.
            :class:`~lightning_fed.communication.topk.TopK`, any object with
            ``filter(values: np.ndarray, step: int) -> np.ndarray``.

    Example::

        >>> codec = SparseCodec(["indices"])
        >>> payload = codec.encode([torch.tensor([0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])])
        >>> len(payload), codec.last_encodings
        (13, ['indices'])
        >>> from lightning_fed.communication.values import QSGD
        >>> quantised = SparseCodec(values=QSGD(bits=8))
        >>> len(quantised.encode([torch.ones(1000)], step=0, seed=(0, 1))), quantised.lossy  # 5 + 4 + 1000
        (1009, True)
    """

    def __init__(
        self,
        encodings: list[str] | tuple[str, ...] = tuple(ENCODINGS),
        values: ValueCoder | None = None,
        filters: list | tuple = (),
    ) -> None:
        unknown = [name for name in encodings if name not in ENCODINGS]
        if unknown or not encodings:
            raise ValueError(
                f"encodings must be a non-empty list of {', '.join(ENCODINGS)}, got {encodings!r}"
            )
        self.encodings = [ENCODINGS[name] for name in encodings]
        self.values = values if values is not None else Float32()
        self.filters = list(filters)
        self.last_encodings: list[str] = []

    @property
    def lossy(self) -> bool:
        return bool(self.filters) or self.values.lossy

    def __repr__(self) -> str:
        return f"SparseCodec({'+'.join([*(repr(f) for f in self.filters), repr(self.values)])})"

    def encode(self, tensors: list[torch.Tensor], *, step: int = 0, seed=0) -> Payload:
        rng = np.random.default_rng(seed) if self.values.lossy else None
        parts, chosen = [], []
        for tensor in tensors:
            dense = tensor.detach().reshape(-1).to("cpu", torch.float32).numpy()
            for stage in self.filters:
                dense = stage.filter(dense, step)
            present = dense != 0
            kept = int(np.count_nonzero(present))  # of a bool array: 10x faster than of the floats
            if kept == 0:
                parts.append(HEADER.pack(EMPTY_TAG, 0))
                chosen.append("empty")
                continue
            if kept == dense.size and DENSE in self.encodings:  # nothing is cheaper than every value alone
                encoding, support, written = DENSE, None, dense
            else:
                support = Support(dense, present)
                encoding = self._cheapest(support)
                written = dense if encoding is DENSE else support.values
            body = [] if support is None else encoding.write(support)
            parts += [HEADER.pack(encoding.tag, written.size), *body, *self.values.write(written, rng)]
            chosen.append(encoding.name)
        self.last_encodings = chosen
        return Payload(b"".join(parts))

    def _cheapest(self, support: Support) -> Encoding:
        sizes = []
        for i, encoding in enumerate(self.encodings):
            if encoding is DENSE and not self.values.exact_zero:
                continue  # zeros would come back as values
            size = encoding.size(support)
            if size is not None:
                written = support.numel if encoding is DENSE else support.count
                sizes.append((size + self.values.size(written), i, encoding))
        if not sizes:
            raise ValueError(f"no encoding of {[e.name for e in self.encodings]} can write this tensor")
        return min(sizes)[2]

    def decode(self, payload: Payload, numels: list[int]) -> list[torch.Tensor]:
        return self.read(payload, numels)[0]

    def read(self, payload: Payload, numels: list[int]) -> tuple[list[torch.Tensor], int]:
        """The tensors and the values the segments' headers count (every entry of a dense one)."""
        view, offset, out, carried = memoryview(payload.data), 0, [], 0
        for numel in numels:
            tag, count = HEADER.unpack_from(view, offset)
            offset += HEADER.size
            carried += count
            if tag == EMPTY_TAG:
                out.append(torch.zeros(numel))
                continue
            where, used = _BY_TAG[tag].read(view[offset:], count, numel)
            offset += used
            values, used = self.values.read(view[offset:], count)
            offset += used
            out.append(torch.from_numpy(_place(numel, where, values)))
        if offset != len(view):
            raise ValueError(f"payload has {len(view) - offset} bytes after its last tensor")
        return out, carried
