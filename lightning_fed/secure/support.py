"""The union of a round's supports, learned by a secure sum of packed counts (the paper's variant).

Under the paper's variant each device prunes by its own log_sigma2, so the coordinates it sends
(its support: the nonzero values of its update) are its own, and a secure sum needs one support
common to the round. The dense vector is one (every coordinate at 32 bits). The union is smaller:
the devices first secure-sum their support indicators, packed ``32 // bits`` to a word in fields of
``bits`` bits (enough for the round's count, so no field carries into the next), and the server
learns how many devices kept each coordinate, not which; the values are then secure-summed over
the coordinates that any device kept. The count costs ``bits`` (rounded up to the word) a
coordinate, 6.4 bits at 50 devices a round; the values 32 bits a coordinate of the union.

Example::

    >>> import torch
    >>> update = [torch.tensor([0.0, 1.5, 0.0, -2.0, 0.0, 0.0, 3.0])]
    >>> words = pack_support(update, bits=6)  # five 6-bit fields a word
    >>> words.tolist()  # coordinates 1 and 3 in word 0, coordinate 6 in word 1
    [262208, 64]
    >>> counts = unpack_counts(words * 2, bits=6, numel=7)  # the sum of two devices' words alike
    >>> counts.tolist()
    [0, 2, 0, 2, 0, 0, 2]
    >>> [keep.tolist() for keep in union_keeps(counts, [3, 4])]
    [[False, True, False], [True, False, False, True]]
"""

import numpy as np
import torch

WORD_BITS = 32


def count_bits(max_devices: int) -> int:
    """Bits of a field that holds a count of up to ``max_devices`` without carrying.

    >>> count_bits(50), count_bits(63), count_bits(64), count_bits(1)
    (6, 6, 7, 1)
    """
    return max(1, int(max_devices).bit_length())


def packed_length(numel: int, bits: int) -> int:
    """Words of a packed support of ``numel`` coordinates.

    >>> packed_length(7, 6), packed_length(10, 6), packed_length(10, 32)
    (2, 2, 10)
    """
    fields = WORD_BITS // bits
    return -(-numel // fields)


def pack_support(tensors: list[torch.Tensor], bits: int) -> np.ndarray:
    """One device's support indicators (1 where its update is nonzero), ``32 // bits`` to a word."""
    flags = np.concatenate([t.detach().reshape(-1).cpu().numpy() != 0 for t in tensors])
    fields = WORD_BITS // bits
    padded = np.zeros(packed_length(flags.size, bits) * fields, dtype=np.uint32)
    padded[: flags.size] = flags
    columns = padded.reshape(-1, fields)
    words = np.zeros(columns.shape[0], dtype=np.uint32)
    for field in range(fields):
        words |= columns[:, field] << np.uint32(bits * field)
    return words


def unpack_counts(total: np.ndarray, bits: int, numel: int) -> np.ndarray:
    """Per coordinate, how many devices kept it: the fields of the summed words ``total``."""
    fields, low = WORD_BITS // bits, np.uint32((1 << bits) - 1)
    total = total.astype(np.uint32)
    columns = [(total >> np.uint32(bits * field)) & low for field in range(fields)]
    return np.stack(columns, axis=1).reshape(-1)[:numel].astype(np.int64)


def union_keeps(counts: np.ndarray, numels: list[int]) -> list[torch.Tensor]:
    """The union as one boolean mask a tensor: the coordinates at least one device kept."""
    kept = torch.from_numpy(counts > 0)
    return list(kept.split(numels))
