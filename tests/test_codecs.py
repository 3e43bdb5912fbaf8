"""Codecs: every payload decodes to exactly what was encoded, and its length is what it claims."""

import numpy as np
import pytest
import torch

from lightning_fed.communication import ENCODINGS, Payload, SparseCodec
from lightning_fed.communication.codecs import HEADER
from lightning_fed.communication.rice import (
    best_k,
    gaps_of,
    rice_bits,
    rice_decode,
    rice_encode,
    rice_positions,
    unary_stream,
)

DENSITIES = [0.0, 1e-4, 0.003, 0.03, 0.2, 0.5, 0.97, 1.0]
SHAPES = [(1,), (7,), (64, 3), (300, 784), (64, 1, 5, 5)]


def masked(shape, density: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator)
    keep = torch.rand(shape, generator=generator) < density
    return values * keep


@pytest.mark.parametrize(
    "encodings", [None, ["dense"], ["indices"], ["bitmap"], ["rice"], ["bitmap", "rice"]]
)
def test_decode_of_encode_is_exact_for_many_densities_and_shapes(encodings):
    codec = SparseCodec() if encodings is None else SparseCodec(encodings)
    for seed, density in enumerate(DENSITIES):
        tensors = [masked(shape, density, seed * 10 + i) for i, shape in enumerate(SHAPES)]
        payload = codec.encode([t.reshape(-1) for t in tensors])
        decoded = codec.decode(payload, [t.numel() for t in tensors])
        for original, back in zip(tensors, decoded, strict=True):
            assert torch.equal(back.reshape(original.shape), original), (encodings, density)
        expected_values = sum(
            t.numel() if name == "dense" else int(t.count_nonzero())
            for t, name in zip(tensors, codec.last_encodings, strict=True)
        )
        assert codec.read(payload, [t.numel() for t in tensors])[1] == expected_values  # from the bytes


def test_payload_length_is_header_plus_the_chosen_encodings_exact_size():
    codec = SparseCodec()
    for density in DENSITIES:
        flat = masked((300, 784), density, 3).reshape(-1)
        payload = codec.encode([flat])
        positions = np.flatnonzero(flat.numpy())
        if positions.size == 0:
            assert len(payload) == HEADER.size and codec.last_encodings == ["empty"]
            continue
        count, numel, gaps = positions.size, flat.numel(), gaps_of(positions)
        sizes = {  # each encoding's size from its definition, the Rice code at its best k
            "dense": 4 * numel, "indices": 8 * count, "bitmap": -(-numel // 8) + 4 * count,
            "rice": 5 + -(-rice_bits(gaps, best_k(gaps)) // 8) + 4 * count,
        }  # fmt: skip
        assert len(payload) == HEADER.size + min(s for s in sizes.values() if s is not None)
        assert sizes[codec.last_encodings[0]] == len(payload) - HEADER.size


def test_the_cheapest_encoding_follows_the_density():
    def chosen(density, encodings=tuple(ENCODINGS)):
        codec = SparseCodec(encodings)
        codec.encode([masked((100_000,), density, 1)])
        return codec.last_encodings[0]

    assert [chosen(d) for d in (0.001, 0.2, 1.0)] == ["rice", "rice", "dense"]
    without_rice = ("dense", "indices", "bitmap")
    assert [chosen(d, without_rice) for d in (0.001, 0.2, 1.0)] == ["indices", "bitmap", "dense"]


def test_rice_coding_round_trips_and_takes_the_bits_it_counts():
    rng = np.random.default_rng(0)
    for count, numel in [(1, 1), (5, 10), (100, 100_000), (3000, 235_200)]:
        positions = np.sort(rng.choice(numel, size=count, replace=False))
        gaps = gaps_of(positions)
        k = best_k(gaps)
        stream = rice_encode(gaps, k)
        assert len(stream) == -(-rice_bits(gaps, k) // 8)
        assert np.array_equal(rice_decode(stream, count, k), gaps)
        assert all(rice_bits(gaps, k) <= rice_bits(gaps, other) for other in range(20))


def test_the_k0_stream_from_the_mask_is_the_rice_code_of_the_gaps_and_positions_read_back():
    rng = np.random.default_rng(1)
    for density in (0.001, 0.3, 0.5, 0.97, 1.0):
        present = rng.random(5000) < density
        present[-7:] = False  # the stream stops at the last kept entry, not at the tensor's end
        positions = np.flatnonzero(present)
        end = int(positions[-1]) + 1 if positions.size else 0
        gaps = gaps_of(positions)
        assert unary_stream(present, end) == rice_encode(gaps, 0)
        for k in (0, 1, 3):
            stream = rice_encode(gaps, k)
            assert np.array_equal(rice_positions(stream, positions.size, k), positions)
    with pytest.raises(ValueError, match="fewer than 11 codes"):  # 4 codes and 6 zeros of padding
        rice_positions(rice_encode(np.array([0, 2, 0, 4]), 0), 11, 0)


def test_bad_encodings_and_a_truncated_payload_are_errors():
    with pytest.raises(
        ValueError, match="encodings must be a non-empty list of dense, indices, bitmap, rice"
    ):
        SparseCodec(["zip"])
    codec = SparseCodec()
    payload = codec.encode([torch.tensor([0.0, 1.0])])
    with pytest.raises(ValueError, match="bytes after its last tensor"):
        codec.decode(Payload(payload.data + b"\0"), [2])


def test_rice_size_at_half_density_or_more_is_the_best_k_s():
    from lightning_fed.communication.codecs import Support

    rng = np.random.default_rng(0)
    for density in (0.5, 0.6, 0.9, 0.999):
        for tail in (0, 500):  # trailing zeros are where k = 0 beats the bitmap
            dense = (rng.random(4000) < density).astype(np.float32)
            dense[len(dense) - tail :] = 0
            positions = np.flatnonzero(dense)
            gaps = gaps_of(positions)
            if 2 * positions.size < dense.size:
                continue
            walked = 5 + -(-rice_bits(gaps, best_k(gaps)) // 8)  # positions only; values follow
            assert ENCODINGS["rice"].size(Support(dense)) == walked


def test_a_support_ends_one_past_its_last_non_zero_entry():
    """Against the definition, for the shortcut (last entry present) and the search alike."""
    from lightning_fed.communication.codecs import Support

    rng = np.random.default_rng(0)
    for numel in (1, 2, 7, 64, 1000):
        for density in (0.0, 0.01, 0.5, 1.0):
            dense = (rng.standard_normal(numel) * (rng.random(numel) < density)).astype(np.float32)
            present = np.flatnonzero(dense)
            assert Support(dense).end == (int(present[-1]) + 1 if present.size else 0), (numel, density)
    assert Support(np.array([0, 3, 0, 0], dtype=np.float32)).end == 2
    assert Support(np.array([0, 0, 0, 5], dtype=np.float32)).end == 4
