"""Value coders: how the kept entries' values are written (after their positions).

A :class:`~lightning_fed.communication.SparseCodec` writes each tensor's positions in the cheapest
encoding and hands the values of the kept entries (a float32 array) to its value coder:

- :class:`Float32`: 4 bytes a value, lossless (the default, the paper's protocol);
- :class:`Float16`: 2 bytes a value, round to nearest (relative error <= 2**-11, clipped at
  +-65504);
- :class:`QSGD`: stochastic uniform quantisation to ``bits`` in {2, 4, 8} with a float32 scale
  (the largest magnitude) per block of ``block`` values; unbiased, each value within one level
  ``scale / (2**(bits-1) - 1)`` of the input;
- :class:`Sign`: one bit a value and a float32 scale per block (the block's mean magnitude,
  signSGD with scale); biased, to be used with error feedback.

Stochastic coders draw from the ``rng`` the codec passes them (seeded by run, device, step and
direction), so the same run sends the same bytes.

Example::

    >>> values = np.array([0.5, -1.0, 0.25], dtype=np.float32)
    >>> coder = QSGD(bits=8)
    >>> chunks = coder.write(values, np.random.default_rng(0))
    >>> data = b"".join(bytes(c) for c in chunks)
    >>> len(data) == coder.size(3) == 4 + 3
    True
    >>> decoded, used = coder.read(memoryview(data), 3)
    >>> bool(np.all(np.abs(decoded - values) <= 1.0 / 127)), used
    (True, 7)
"""

from abc import ABC, abstractmethod

import numpy as np

FLOAT = np.dtype("<f4")
HALF = np.dtype("<f2")
HALF_MAX = float(np.finfo(np.float16).max)
QSGD_BITS = (2, 4, 8)


class ValueCoder(ABC):
    """Writes and reads the values of a tensor's kept entries.

    ``exact_zero``: a zero value reads back as zero (a dense tensor may then be written whole,
    zeros and all); ``lossy``: what is read back may differ from what was written.
    """

    name: str
    lossy = True
    exact_zero = True

    @abstractmethod
    def size(self, count: int) -> int:
        """Exact bytes of ``count`` values."""

    @abstractmethod
    def write(self, values: np.ndarray, rng: np.random.Generator | None) -> list:
        """The values as bytes-like chunks."""

    @abstractmethod
    def read(self, view: memoryview, count: int) -> tuple[np.ndarray, int]:
        """``count`` float32 values and the bytes consumed; the array may be a read-only view of
        ``view`` (the codec copies it where it must)."""

    def __repr__(self) -> str:
        return self.name


class Float32(ValueCoder):
    """Lossless: the float32 values themselves."""

    name, lossy = "float32", False

    def size(self, count):
        return 4 * count

    def write(self, values, rng):
        return [values.astype(FLOAT, copy=False)]

    def read(self, view, count):
        return np.frombuffer(view, FLOAT, count), 4 * count  # copied once, by the codec


class Float16(ValueCoder):
    """Half precision, round to nearest; magnitudes beyond 65504 are clipped to it."""

    name = "fp16"

    def size(self, count):
        return 2 * count

    def write(self, values, rng):
        return [np.clip(values, -HALF_MAX, HALF_MAX).astype(HALF)]

    def read(self, view, count):
        return np.frombuffer(view, HALF, count).astype(FLOAT), 2 * count


def _blocks(count: int, block: int | None) -> int:
    return 0 if count == 0 else (1 if block is None else -(-count // block))


def _check_block(block: int | None, what: str) -> None:
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"{what} block must be an integer >= 1 (values per scale), got {block!r}")


class QSGD(ValueCoder):
    """Stochastic uniform quantisation (Alistarh et al., QSGD) to ``bits`` with a scale per block.

    A value v of a block with scale s = max |v| becomes ``sign(v) * q * s / L`` with
    ``L = 2**(bits-1) - 1`` levels and q = floor(|v| L / s) rounded up with probability equal to
    the remainder, so the expectation is v. Codes are packed ``bits`` to a value.

    Example::

        >>> coder = QSGD(bits=2)
        >>> coder.size(10), coder.lossy  # one scale, ten 2-bit codes
        (7, True)
    """

    def __init__(self, bits: int = 8, block: int | None = None) -> None:
        if bits not in QSGD_BITS:
            raise ValueError(f"qsgd bits must be one of {', '.join(map(str, QSGD_BITS))}, got {bits!r}")
        _check_block(block, "qsgd")
        self.bits, self.block = bits, block
        self.levels = 2 ** (bits - 1) - 1
        self.name = f"qsgd:{bits}" + ("" if block is None else f":{block}")

    def size(self, count):
        return 4 * _blocks(count, self.block) + -(-count * self.bits // 8)

    def _scales(self, values: np.ndarray) -> np.ndarray:
        magnitude = np.abs(values)
        if self.block is None or self.block >= values.size:
            return np.array([magnitude.max(initial=0.0)], dtype=FLOAT)
        return np.maximum.reduceat(magnitude, np.arange(0, values.size, self.block)).astype(FLOAT)

    def _expand(self, scales: np.ndarray, count: int) -> np.ndarray:
        return scales if scales.size == 1 else np.repeat(scales, self.block)[:count]

    def write(self, values, rng):
        if rng is None:
            raise ValueError("QSGD draws random roundings: the codec must pass an rng")
        scales = self._scales(values)
        scale = self._expand(scales, values.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            level = np.where(scale > 0, np.abs(values) * (self.levels / scale), 0.0)
        level = np.minimum(level, self.levels)  # float rounding can leave a hair above L
        floor = np.floor(level)
        up = rng.random(values.size, dtype=np.float32) < (level - floor)
        codes = (np.sign(values) * (floor + up)).astype(np.int8)
        return [scales, _pack(codes + self.levels, self.bits)]

    def read(self, view, count):
        blocks = _blocks(count, self.block)
        scales = np.frombuffer(view, FLOAT, blocks)
        nbytes = -(-count * self.bits // 8)
        codes = _unpack(np.frombuffer(view, np.uint8, nbytes, offset=4 * blocks), self.bits, count)
        levels = codes.astype(FLOAT) - self.levels
        values = levels * (self._expand(scales, count) / self.levels) if blocks else levels
        return values.astype(FLOAT, copy=False), 4 * blocks + nbytes


class Sign(ValueCoder):
    """One bit a value: ``sign(v) * s`` with s the block's mean magnitude (scaled signSGD).

    It cannot write a zero, so a tensor with zeros always travels with its positions.

    Example::

        >>> coder = Sign()
        >>> data = b"".join(bytes(c) for c in coder.write(np.array([0.5, -1.5], dtype=np.float32), None))
        >>> coder.read(memoryview(data), 2)[0].tolist()
        [1.0, -1.0]
    """

    exact_zero = False

    def __init__(self, block: int | None = None) -> None:
        _check_block(block, "sign")
        self.block = block
        self.name = "sign" + ("" if block is None else f":{block}")

    def size(self, count):
        return 4 * _blocks(count, self.block) + -(-count // 8)

    def _scales(self, values: np.ndarray) -> np.ndarray:
        magnitude = np.abs(values)
        if self.block is None or self.block >= values.size:
            return np.array([magnitude.mean() if values.size else 0.0], dtype=FLOAT)
        starts = np.arange(0, values.size, self.block)
        sizes = np.diff(np.append(starts, values.size))
        return (np.add.reduceat(magnitude, starts) / sizes).astype(FLOAT)

    def write(self, values, rng):
        return [self._scales(values), np.packbits(values >= 0)]

    def read(self, view, count):
        blocks = _blocks(count, self.block)
        scales = np.frombuffer(view, FLOAT, blocks)
        nbytes = -(-count // 8)
        positive = np.unpackbits(np.frombuffer(view, np.uint8, nbytes, offset=4 * blocks), count=count)
        scale = scales if blocks <= 1 else np.repeat(scales, self.block)[:count]
        values = np.where(positive.astype(bool), scale, -scale) if count else np.zeros(0, FLOAT)
        return values.astype(FLOAT, copy=False), 4 * blocks + nbytes


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes below ``2**bits`` packed ``8 // bits`` to a byte, first code in the high bits."""
    codes = codes.astype(np.uint8)
    if bits == 8:
        return codes
    per = 8 // bits
    padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
    padded[: codes.size] = codes
    shifts = np.arange(per - 1, -1, -1, dtype=np.uint8) * bits
    return np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1).astype(np.uint8)


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    if bits == 8:
        return packed[:count]
    per = 8 // bits
    shifts = np.arange(per - 1, -1, -1, dtype=np.uint8) * bits
    return ((packed[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[:count]


VALUE_CODERS = {"float32": Float32, "fp16": Float16, "qsgd": QSGD, "sign": Sign}
