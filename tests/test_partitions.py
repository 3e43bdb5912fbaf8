"""Partitions: disjoint, complete, sized as promised, seeded, skewed as asked."""

import numpy as np
import pytest

from datamodules.partitions import DirichletPartition, IidPartition, ShardPartition, make_partition

LABELS = np.repeat(np.arange(10), 100)  # 1 000 samples, 10 classes
CASES = [
    ("iid", {}),
    ("iid", {"unequal_sigma": 1.0}),
    ("dirichlet", {"alpha": 0.5, "min_size": 5}),
    ("shards", {"num_shards": 20}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_shards_are_disjoint_and_seeded(name, params):
    part = make_partition(name, LABELS, num_devices=5, seed=1, **params)
    union = np.concatenate(part.shards)
    assert len(union) == len(np.unique(union))  # no sample on two devices
    assert len(part.shards) == 5 and min(part.sizes()) > 0
    again = make_partition(name, LABELS, num_devices=5, seed=1, **params)
    other = make_partition(name, LABELS, num_devices=5, seed=2, **params)
    assert all(np.array_equal(a, b) for a, b in zip(part.shards, again.shards, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(part.shards, other.shards, strict=True))


def test_iid_covers_the_training_set_in_equal_parts():
    part = IidPartition(LABELS, num_devices=8, seed=0)
    assert np.array_equal(np.sort(np.concatenate(part.shards)), np.arange(1000))
    assert part.sizes() == [125] * 8


def test_iid_unequal_sizes_cover_everything_with_different_sizes():
    part = IidPartition(LABELS, num_devices=8, seed=0, unequal_sigma=1.0)
    assert sum(part.sizes()) == 1000 and len(set(part.sizes())) > 1


def test_shards_give_each_device_its_label_sorted_pieces():
    part = ShardPartition(LABELS, num_devices=5, num_shards=10, seed=0)
    assert part.sizes() == [200] * 5
    classes_per_device = (part.label_histogram() > 0).sum(axis=1)
    assert classes_per_device.max() <= 2


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_uniform():
    skewed = DirichletPartition(LABELS, num_devices=5, alpha=0.05, seed=0).label_histogram()
    uniform = DirichletPartition(LABELS, num_devices=5, alpha=1e4, seed=0).label_histogram()
    share = lambda h: h / h.sum(axis=1, keepdims=True)  # noqa: E731
    assert share(skewed).max(axis=1).mean() > 0.5  # a dominant class per device
    assert np.abs(share(uniform) - 0.1).max() < 0.03


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: make_partition("zipf", LABELS, 2),
            r"unknown partition 'zipf'; choose one of iid, dirichlet, shards",
        ),
        (lambda: IidPartition(LABELS, 0), r"num_devices must be an integer >= 1, got 0"),
        (lambda: IidPartition(LABELS, 2000), r"num_devices=2000 exceeds the 1000 training samples"),
        (
            lambda: DirichletPartition(LABELS, 2, alpha=0),
            r"Dirichlet alpha must be a finite number > 0, got 0",
        ),
        (
            lambda: DirichletPartition(LABELS, 2, alpha=-1.0),
            r"Dirichlet alpha must be a finite number > 0, got -1.0",
        ),
        (
            lambda: DirichletPartition(LABELS, 2, alpha=float("inf")),
            r"Dirichlet alpha must be a finite number > 0, got inf",
        ),
        (lambda: DirichletPartition(LABELS, 2, min_size=0), r"min_size must be an integer >= 1, got 0"),
        (lambda: ShardPartition(LABELS, 3, num_shards=10), r"num_shards=10 does not divide among 3 devices"),
        (lambda: IidPartition(LABELS, 2, unequal_sigma=-1), r"unequal_sigma must be a finite number >= 0"),
        (
            lambda: IidPartition(LABELS, 2, unequal_sigma="1"),
            r"unequal_sigma must be a finite number >= 0, got '1'",
        ),
    ],
)
def test_bad_partition_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
