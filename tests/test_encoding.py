"""The sizes the ledger counts: Rice-coded positions are a real code, and the count bounds it."""

import pytest
import torch

from lightning_fed.communication.encoding import golomb_bytes, rice_position_bits, wire_bytes


def rice_encode(positions: list[int], k: int) -> str:
    """Positions (sorted) as Rice-coded gaps: unary quotient, a 0, then k remainder bits."""
    bits, previous = [], -1
    for position in positions:
        gap = position - previous - 1
        bits.append("1" * (gap >> k) + "0" + (format(gap & ((1 << k) - 1), f"0{k}b") if k else ""))
        previous = position
    return "".join(bits)


def rice_decode(bits: str, count: int, k: int) -> list[int]:
    positions, at, previous = [], 0, -1
    for _ in range(count):
        quotient = 0
        while bits[at] == "1":
            quotient, at = quotient + 1, at + 1
        at += 1
        remainder = int(bits[at : at + k], 2) if k else 0
        at += k
        previous += (quotient << k) + remainder + 1
        positions.append(previous)
    assert at == len(bits)
    return positions


def random_positions(numel: int, density: float, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.nonzero(torch.rand(numel, generator=generator) < density).flatten().tolist()


@pytest.mark.parametrize("density", [0.002, 0.01, 0.05, 0.3])
def test_rice_code_carries_the_positions_in_no_more_bits_than_counted(density):
    numel = 20_000
    for seed in range(3):
        positions = random_positions(numel, density, seed)
        nnz = len(positions)
        for k in range(12):
            bits = rice_encode(positions, k)
            assert rice_decode(bits, nnz, k) == positions
            assert len(bits) <= rice_position_bits(nnz, numel, k)
        # the bound is near the real size: it loses under one bit a position to rounding
        best = min(len(rice_encode(positions, k)) for k in range(12))
        counted = min(rice_position_bits(nnz, numel, k) for k in range(20))
        assert best <= counted <= best + nnz
        assert golomb_bytes(nnz, numel) == min(4 * nnz + 1 + -(-counted // 8), wire_bytes(nnz, numel))


def test_worst_placement_meets_the_bound():
    numel, nnz, k = 1000, 10, 4
    positions = list(range(numel - nnz, numel))  # every zero before the first entry
    assert len(rice_encode(positions, k)) == rice_position_bits(nnz, numel, k)


@pytest.mark.parametrize(("nnz", "numel"), [(1, 100), (5, 1_000), (100, 1_000), (999, 1_000), (60, 1 << 20)])
def test_golomb_coding_is_a_further_choice_that_wins_on_sparse_tensors(nnz, numel):
    assert golomb_bytes(nnz, numel) <= wire_bytes(nnz, numel)
    if nnz / numel <= 0.1:  # sparse enough for the code to beat both indices and bitmap
        assert golomb_bytes(nnz, numel) < wire_bytes(nnz, numel)
    if nnz == numel - 1:  # nearly dense: sent densely either way
        assert golomb_bytes(nnz, numel) == wire_bytes(nnz, numel) == 4 * numel
