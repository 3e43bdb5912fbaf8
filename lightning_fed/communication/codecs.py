"""Codecs: what a device uploads and the server sends back, as real bytes.

A message is the list of tensors one side sends (flat float32, one per shared parameter, in the
order both sides know from the :class:`~lightning_fed.federation.SharingPlan`). A codec turns it
into a :class:`Payload` (a byte string) and the receiver reads the tensors back from those bytes
alone. The ledger counts ``len(payload)``, header included, and the paper's measure counts the
float values the payload carries.

:class:`SparseCodec` writes each tensor as one segment, ``tag (1 byte) | count (uint32) | body``,
in the cheapest of its encodings (sizes are exact, computed before anything is written):

- ``dense``: every entry, ``4 * numel`` bytes (count = numel);
- ``indices``: int32 positions and float32 values, ``8 * count``;
- ``bitmap``: a presence bit per entry and the values, ``ceil(numel / 8) + 4 * count``;
- ``rice``: Rice-coded gaps between positions (:mod:`lightning_fed.communication.rice`), a byte of
  ``k``, a uint32 stream length, the stream and the values.

An all-zero tensor costs its 5-byte header. Entries that are exactly zero travel as absent.

Example::

    >>> codec = SparseCodec()
    >>> tensors = [torch.tensor([0.0, 2.0, 0.0, -1.0]), torch.zeros(1000)]
    >>> payload = codec.encode(tensors)
    >>> len(payload), payload.values, codec.last_encodings  # 5 + 1 + 8 bytes, then a 5-byte header
    (19, 2, ['bitmap', 'empty'])
    >>> [t.tolist()[:4] for t in codec.decode(payload, [4, 1000])]
    [[0.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]]
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

HEADER = struct.Struct("<BI")  # tag, count
FLOAT = np.dtype("<f4")
INDEX = np.dtype("<i4")


@dataclass(frozen=True)
class Payload:
    """The bytes of one message and the number of float values among them."""

    data: bytes
    values: int

    def __len__(self) -> int:
        return len(self.data)


class Codec(ABC):
    """Turns a message (a list of flat tensors) into a :class:`Payload` and back.

    Implement both methods to plug in another compressor; the receiver knows ``numels``.
    """

    @abstractmethod
    def encode(self, tensors: list[torch.Tensor]) -> Payload: ...

    @abstractmethod
    def decode(self, payload: Payload, numels: list[int]) -> list[torch.Tensor]: ...


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
        return int(self.numel - np.argmax(self.present[::-1])) if self.count else 0

    @cached_property
    def values(self) -> np.ndarray:
        return self.dense[self.present]


class Encoding(ABC):
    """One way to write the kept entries of a tensor (a segment body)."""

    name: str
    tag: int

    @abstractmethod
    def size(self, support: Support) -> int | None:
        """Exact body bytes, or None where this encoding cannot write the tensor."""

    @abstractmethod
    def write(self, support: Support) -> tuple[list, int]:
        """The body as a list of bytes-like chunks (joined once, by the codec) and the number of
        float values written."""

    @abstractmethod
    def read(self, view: memoryview, count: int, numel: int) -> tuple[np.ndarray, int]:
        """The dense tensor and the body bytes consumed."""


class Dense(Encoding):
    name, tag = "dense", 1

    def size(self, support):
        return 4 * support.numel

    def write(self, support):
        return [support.dense.astype(FLOAT, copy=False)], support.numel

    def read(self, view, count, numel):
        return np.frombuffer(view, FLOAT, numel).copy(), 4 * numel


class Indices(Encoding):
    name, tag = "indices", 2

    def size(self, support):
        return 8 * support.count if support.numel < 2**31 else None

    def write(self, support):
        return [support.positions.astype(INDEX), support.values], support.count

    def read(self, view, count, numel):
        positions = np.frombuffer(view, INDEX, count)
        values = np.frombuffer(view, FLOAT, count, offset=4 * count)
        return _scatter(numel, positions, values), 8 * count


class Bitmap(Encoding):
    name, tag = "bitmap", 3

    def size(self, support):
        return -(-support.numel // 8) + 4 * support.count

    def write(self, support):
        return [np.packbits(support.present), support.values], support.count

    def read(self, view, count, numel):
        nbytes = -(-numel // 8)
        present = np.unpackbits(np.frombuffer(view, np.uint8, nbytes), count=numel).view(bool)
        out = np.zeros(numel, dtype=FLOAT)
        out[present] = np.frombuffer(view, FLOAT, count, offset=nbytes)
        return out, nbytes + 4 * count


class Rice(Encoding):
    name, tag = "rice", 4
    _HEAD = struct.Struct("<BI")  # k, stream bytes

    def size(self, support):
        return self._HEAD.size + -(-self._bits(support) // 8) + 4 * support.count

    def write(self, support):
        k = self._k(support)
        stream = unary_stream(support.present, support.end) if k == 0 else rice_encode(support.gaps, k)
        return [self._HEAD.pack(k, len(stream)), stream, support.values], support.count

    def read(self, view, count, numel):
        k, nbytes = self._HEAD.unpack_from(view)
        start = self._HEAD.size
        positions = rice_positions(bytes(view[start : start + nbytes]), count, k)
        values = np.frombuffer(view, FLOAT, count, offset=start + nbytes)
        return _scatter(numel, positions, values), start + nbytes + 4 * count

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


def _scatter(numel: int, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(numel, dtype=FLOAT)
    out[positions] = values
    return out


class SparseCodec(Codec):
    """Each tensor in the cheapest of ``encodings`` (lossless for float32).

    Args:
        encodings: names from ``dense``, ``indices``, ``bitmap``, ``rice``; the default is all four.

    Example::

        >>> codec = SparseCodec(["indices"])
        >>> payload = codec.encode([torch.tensor([0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])])
        >>> len(payload), codec.last_encodings
        (13, ['indices'])
    """

    def __init__(self, encodings: list[str] | tuple[str, ...] = tuple(ENCODINGS)) -> None:
        unknown = [name for name in encodings if name not in ENCODINGS]
        if unknown or not encodings:
            raise ValueError(
                f"encodings must be a non-empty list of {', '.join(ENCODINGS)}, got {encodings!r}"
            )
        self.encodings = [ENCODINGS[name] for name in encodings]
        self.last_encodings: list[str] = []

    def encode(self, tensors: list[torch.Tensor]) -> Payload:
        parts, values, chosen = [], 0, []
        for tensor in tensors:
            dense = tensor.detach().reshape(-1).to("cpu", torch.float32).numpy()
            present = dense != 0
            kept = int(np.count_nonzero(present))  # of a bool array: 10x faster than of the floats
            if kept == 0:
                parts.append(HEADER.pack(EMPTY_TAG, 0))
                chosen.append("empty")
                continue
            if kept == dense.size and DENSE in self.encodings:  # nothing is cheaper than every value alone
                parts += [HEADER.pack(DENSE.tag, dense.size), dense.astype(FLOAT, copy=False)]
                values += dense.size
                chosen.append(DENSE.name)
                continue
            support = Support(dense, present)
            sizes = [(e.size(support), i, e) for i, e in enumerate(self.encodings)]
            _, _, encoding = min(s for s in sizes if s[0] is not None)
            body, written = encoding.write(support)
            count = dense.size if encoding is DENSE else support.count
            parts += [HEADER.pack(encoding.tag, count), *body]
            values += written
            chosen.append(encoding.name)
        self.last_encodings = chosen
        return Payload(b"".join(parts), values)

    def decode(self, payload: Payload, numels: list[int]) -> list[torch.Tensor]:
        view, offset, out = memoryview(payload.data), 0, []
        for numel in numels:
            tag, count = HEADER.unpack_from(view, offset)
            offset += HEADER.size
            if tag == EMPTY_TAG:
                out.append(torch.zeros(numel))
                continue
            dense, used = _BY_TAG[tag].read(view[offset:], count, numel)
            offset += used
            out.append(torch.from_numpy(dense))
        if offset != len(view):
            raise ValueError(f"payload has {len(view) - offset} bytes after its last tensor")
        return out
