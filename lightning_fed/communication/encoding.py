"""Sparse encodings of a gradient tensor and their sizes in bytes.

A tensor with ``nnz`` kept entries out of ``numel`` can be sent as values plus 32-bit indices,
as values plus a presence bitmap, or densely; the cheapest wins per tensor (``wire_bytes``).
``golomb_bytes`` codes the positions as Rice-coded gaps instead (a Golomb code with a power-of-two
parameter, as sparse ternary compression does), which costs about ``log2(numel / nnz) + 2`` bits a
position. The paper's measure ignores positions and counts ``4 * values`` bytes.
"""

import torch

VALUE_BYTES = 4
INDEX_BYTES = 4


def indices_bytes(nnz: int, value_bytes: int = VALUE_BYTES, index_bytes: int = INDEX_BYTES) -> int:
    """Values plus one index per value.

    Example::

        >>> indices_bytes(10)
        80
    """
    return nnz * (value_bytes + index_bytes)


def bitmap_bytes(nnz: int, numel: int, value_bytes: int = VALUE_BYTES) -> int:
    """Values plus one bit per entry of the tensor.

    Example::

        >>> bitmap_bytes(10, 1000)
        165
    """
    return nnz * value_bytes + -(-numel // 8)


def wire_bytes(nnz: int, numel: int, value_bytes: int = VALUE_BYTES) -> int:
    """Bytes of the cheapest of indices, bitmap and dense encodings of one tensor.

    Example::

        >>> wire_bytes(0, 1000), wire_bytes(10, 1000), wire_bytes(500, 1000), wire_bytes(1000, 1000)
        (0, 80, 2125, 4000)
    """
    if nnz == 0:
        return 0
    return min(indices_bytes(nnz, value_bytes), bitmap_bytes(nnz, numel, value_bytes), numel * value_bytes)


def rice_position_bits(nnz: int, numel: int, k: int) -> int:
    """Most bits the positions of ``nnz`` entries of ``numel`` take as Rice-coded gaps of parameter ``k``.

    Gap ``g`` (the zeros before an entry) is sent as ``g >> k`` in unary (that many ones and a zero)
    and ``g`` mod ``2**k`` in ``k`` bits. The gaps sum to at most ``numel - nnz``, so the unary parts
    take at most ``(numel - nnz) >> k`` ones: the bound holds for every placement of the entries.

    Example::

        >>> rice_position_bits(10, 1000, 6)  # 990 >> 6 = 15 ones, 10 x (1 + 6) other bits
        85
    """
    return ((numel - nnz) >> k) + nnz * (k + 1)


def golomb_bytes(nnz: int, numel: int, value_bytes: int = VALUE_BYTES) -> int:
    """``wire_bytes`` with one more choice: values plus Rice-coded positions, ``k`` the best for
    ``nnz / numel``, plus a byte holding ``k``. It wins once fewer than about 1 in 32 entries is sent.

    Example::

        >>> golomb_bytes(0, 1000), golomb_bytes(10, 1000), golomb_bytes(500, 1000)
        (0, 52, 2125)
        >>> wire_bytes(10, 1000)
        80
    """
    if nnz == 0:
        return 0
    bits = min(rice_position_bits(nnz, numel, k) for k in range(max(numel.bit_length(), 1)))
    return min(nnz * value_bytes + 1 + -(-bits // 8), wire_bytes(nnz, numel, value_bytes))


def paper_bytes(values: int) -> int:
    """The paper's measure: 4 bytes per transmitted value, positions not counted."""
    return values * VALUE_BYTES


def encode(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-zero entries of a flat tensor as ``(indices, values)``.

    Example::

        >>> encode(torch.tensor([0.0, 2.0, 0.0, -1.0]))
        (tensor([1, 3]), tensor([ 2., -1.]))
    """
    indices = tensor.nonzero().flatten()
    return indices, tensor[indices]


def decode_sum(numel: int, indices: torch.Tensor, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum sparse ``(indices, values)`` (padding entries of value 0 are harmless) into a dense tensor.

    Example::

        >>> decode_sum(4, torch.tensor([1, 1, 0]), torch.tensor([1.0, 2.0, 0.0]), torch.zeros(1))
        tensor([0., 3., 0., 0.])
    """
    out = torch.zeros(numel, dtype=like.dtype, device=like.device)
    return out.index_add_(0, indices, values.to(like.dtype))
