"""Sparse encodings of a gradient tensor and their sizes in bytes.

A tensor with ``nnz`` kept entries out of ``numel`` can be sent as values plus 32-bit indices,
as values plus a presence bitmap, or densely; the cheapest wins per tensor. The paper's measure
ignores positions and counts ``4 * values`` bytes.
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
