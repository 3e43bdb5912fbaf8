"""Rice-coded positions: the gaps between kept entries as a Golomb code with parameter ``2**k``.

Gap ``g`` (the zeros before an entry) is split into ``q = g >> k``, written in unary (``q`` ones
and a zero), and ``r = g mod 2**k`` in ``k`` bits. The unary parts of all gaps are written first and
the remainders after them, so both directions are vectorised; the bit count is that of the
interleaved code, ``sum(q) + count * (k + 1)``.

At ``k = 0`` a gap of ``g`` is ``g`` ones and a zero, so the stream is the tensor's absence mask
up to its last kept entry: :func:`unary_stream` writes it from the mask and :func:`rice_positions`
reads the positions straight from its zeros, the same bytes without the gaps.
"""

import numpy as np

MAX_K = 31


def gaps_of(positions: np.ndarray) -> np.ndarray:
    """Zeros before each of the sorted ``positions``.

    Example::

        >>> gaps_of(np.array([0, 3, 4, 9])).tolist()
        [0, 2, 0, 4]
    """
    return np.diff(positions.astype(np.int64), prepend=-1) - 1


def rice_bits(gaps: np.ndarray, k: int) -> int:
    """Bits of the Rice code of ``gaps`` with parameter ``k``.

    Example::

        >>> rice_bits(np.array([0, 2, 0, 4]), k=1)  # q = 0, 1, 0, 2 and 4 x (1 + 1) bits
        11
    """
    return int((gaps >> k).sum()) + gaps.size * (k + 1)


def best_k(gaps: np.ndarray) -> int:
    """The ``k`` that codes ``gaps`` in the fewest bits (the smallest such ``k``).

    The bit count is convex in ``k`` (going from ``k`` to ``k + 1`` saves ``sum(ceil(q / 2))`` unary
    bits, which falls as ``k`` grows, and costs ``count``), so a walk from the estimate
    ``log2(mean gap)`` to the first ``k`` whose neighbours are no cheaper finds the minimum.

    Example::

        >>> best_k(np.array([0, 2, 0, 4])), best_k(np.full(8, 1000))
        (0, 9)
    """
    if not gaps.size:
        return 0
    k = min(max(int(np.log2(gaps.mean() + 1)), 0), MAX_K)
    bits = rice_bits(gaps, k)
    while k > 0 and (fewer := rice_bits(gaps, k - 1)) <= bits:
        k, bits = k - 1, fewer
    while k < MAX_K and (fewer := rice_bits(gaps, k + 1)) < bits:
        k, bits = k + 1, fewer
    return k


def rice_encode(gaps: np.ndarray, k: int) -> bytes:
    """The bit stream (packed, most significant bit first) of ``gaps`` with parameter ``k``.

    Example::

        >>> rice_encode(np.array([0, 2, 0, 4]), k=1).hex()  # 0 10 0 110 | 0 0 0 0
        '4c00'
    """
    quotients, remainders = gaps >> k, gaps & ((1 << k) - 1)
    unary_bits = int(quotients.sum()) + gaps.size
    bits = np.zeros(unary_bits + gaps.size * k, dtype=np.uint8)
    ends = np.cumsum(quotients + 1) - 1  # where each unary part's terminating zero is
    starts = ends - quotients
    bits[np.repeat(starts, quotients) + _ramp(quotients)] = 1
    if k:
        shifts = np.arange(k - 1, -1, -1, dtype=np.int64)
        bits[unary_bits:] = ((remainders[:, None] >> shifts) & 1).astype(np.uint8).ravel()
    return np.packbits(bits).tobytes()


def unary_stream(present: np.ndarray, end: int) -> bytes:
    """The ``k = 0`` stream of the entries marked in ``present`` (``end``: one past the last).

    Example::

        >>> present = np.array([True, False, False, True, True, False])
        >>> unary_stream(present, end=5) == rice_encode(gaps_of(np.flatnonzero(present)), k=0)
        True
    """
    return np.packbits(~present[:end]).tobytes()


def rice_positions(stream: bytes, count: int, k: int) -> np.ndarray:
    """The sorted positions of the ``count`` entries whose gaps ``stream`` codes.

    Example::

        >>> rice_positions(rice_encode(np.array([0, 2, 0, 4]), k=1), count=4, k=1).tolist()
        [0, 3, 4, 9]
        >>> rice_positions(rice_encode(np.array([0, 2, 0, 4]), k=0), count=4, k=0).tolist()
        [0, 3, 4, 9]
    """
    if k:
        return np.cumsum(rice_decode(stream, count, k) + 1) - 1
    positions = np.flatnonzero(np.unpackbits(np.frombuffer(stream, dtype=np.uint8)) == 0)[:count]
    if positions.size < count:
        raise ValueError(f"Rice stream holds fewer than {count} codes")
    return positions


def rice_decode(stream: bytes, count: int, k: int) -> np.ndarray:
    """The ``count`` gaps coded in ``stream`` with parameter ``k`` (inverse of :func:`rice_encode`).

    Example::

        >>> rice_decode(bytes.fromhex("4c00"), count=4, k=1).tolist()
        [0, 2, 0, 4]
    """
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8))
    ends = np.flatnonzero(bits == 0)[:count] if count else np.zeros(0, dtype=np.int64)
    if ends.size < count:
        raise ValueError(f"Rice stream holds fewer than {count} codes")
    quotients = np.diff(ends, prepend=-1) - 1
    unary_bits = int(ends[-1]) + 1 if count else 0
    remainders = np.zeros(count, dtype=np.int64)
    if k:
        rows = bits[unary_bits : unary_bits + count * k].reshape(count, k).astype(np.int64)
        remainders = rows @ (1 << np.arange(k - 1, -1, -1, dtype=np.int64))
    return (quotients.astype(np.int64) << k) | remainders


def _ramp(lengths: np.ndarray) -> np.ndarray:
    """``0, 1, ..., n - 1`` for each ``n`` of ``lengths``, concatenated.

    Example::

        >>> _ramp(np.array([2, 0, 3])).tolist()
        [0, 1, 0, 1, 2]
    """
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - offsets
