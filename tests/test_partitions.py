"""Partitions: disjoint, complete, sized as promised, seeded, skewed as asked."""

import numpy as np
import pytest

from datamodules.partitions import (
    DirichletPartition,
    IidPartition,
    PathologicalPartition,
    ShardPartition,
    SizeSkewPartition,
    make_partition,
)

LABELS = np.repeat(np.arange(10), 100)  # 1 000 samples, 10 classes
CASES = [
    ("iid", {}),
    ("iid", {"unequal_sigma": 1.0}),
    ("dirichlet", {"alpha": 0.5, "min_size": 5}),
    ("shards", {"num_shards": 20}),
    ("pathological", {"classes_per_device": 2}),
    ("sizeskew", {"distribution": "power-law", "exponent": 1.0}),
    ("sizeskew", {"distribution": "exponential", "exponent": 3.0}),
]


@pytest.mark.parametrize(("name", "params"), [c for c in CASES if c[0] != "shards"])
def test_every_partition_but_shards_covers_the_training_set(name, params):
    part = make_partition(name, LABELS, num_devices=7, seed=3, **params)
    assert np.array_equal(np.sort(np.concatenate(part.shards)), np.arange(len(LABELS)))


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


def _dirichlet_skew_holds(seed: int) -> bool:
    """Each class's largest share on one device, averaged over 100 classes of 100 samples.

    Per class that share X lies in [0.2, 1]; under Dirichlet(0.05) over 5 devices E[X] = 0.887
    (a million draws of ``rng.dirichlet``), under Dirichlet(1e4) it is 0.2 up to rounding (each
    of 100 samples goes by a share 0.2 +- 0.002). By Hoeffding the mean of 100 independent X falls
    below E[X] - 0.387 = 0.5 with probability at most exp(-2 * 100 * 0.387^2 / 0.8^2) < 1e-20; the
    large-alpha mean exceeds 0.25 only if a class's counts stray 5 samples from 20, which its
    Dirichlet shares (standard deviation 0.18 samples) and rounding (at most 1) never do.
    """
    labels = np.repeat(np.arange(100), 100)
    largest = lambda h: (h / h.sum(axis=0, keepdims=True)).max(axis=0).mean()  # noqa: E731
    skewed = largest(DirichletPartition(labels, num_devices=5, alpha=0.05, seed=seed).label_histogram())
    uniform = largest(DirichletPartition(labels, num_devices=5, alpha=1e4, seed=seed).label_histogram())
    return skewed > 0.5 and uniform < 0.25


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_uniform():
    assert _dirichlet_skew_holds(seed=0)


@pytest.mark.slow
def test_dirichlet_skew_holds_for_every_seed_of_a_sweep():
    assert [seed for seed in range(200) if not _dirichlet_skew_holds(seed)] == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: make_partition("zipf", LABELS, 2),
            r"unknown partition 'zipf'; choose one of iid, dirichlet, shards, pathological, sizeskew",
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
            lambda: PathologicalPartition(LABELS, 4, classes_per_device=2),
            r"4 devices x classes_per_device=2 leave some of the 10 classes on no device; use "
            r"classes_per_device >= 3",
        ),
        (
            lambda: PathologicalPartition(LABELS, 4, classes_per_device=0),
            r"classes_per_device must be an integer >= 1, got 0",
        ),
        (
            lambda: PathologicalPartition(LABELS, 4, classes_per_device=11),
            r"classes_per_device=11 exceeds the 10 classes of the data",
        ),
        (
            lambda: SizeSkewPartition(LABELS, 4, distribution="zipf"),
            r"distribution must be one of power-law, exponential, got 'zipf'",
        ),
        (
            lambda: SizeSkewPartition(LABELS, 4, exponent=0),
            r"size-skew exponent must be a finite number > 0, got 0",
        ),
        (
            lambda: IidPartition(LABELS, 2, unequal_sigma="1"),
            r"unequal_sigma must be a finite number >= 0, got '1'",
        ),
    ],
)
def test_bad_partition_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_pathological_gives_every_device_exactly_its_classes_and_every_class_a_device():
    part = PathologicalPartition(LABELS, num_devices=20, classes_per_device=3, seed=0)
    held = part.label_histogram() > 0
    assert (held.sum(axis=1) == 3).all() and held.any(axis=0).all()
    assert max(part.sizes()) - min(part.sizes()) <= 100 // 5  # a class split among 6 devices


@pytest.mark.parametrize("distribution", ["power-law", "exponential"])
def test_size_skew_sizes_fall_with_rank_and_each_device_has_a_sample(distribution):
    part = SizeSkewPartition(LABELS, num_devices=50, distribution=distribution, exponent=2.0, seed=0)
    sizes = sorted(part.sizes(), reverse=True)
    assert min(sizes) >= 1 and sum(sizes) == len(LABELS)
    assert sizes[0] > 2 * sizes[len(sizes) // 2]
    weights = (
        np.arange(1, 51, dtype=float) ** -2.0
        if distribution == "power-law"
        else np.exp(-2.0 * np.arange(50) / 50)
    )
    expected = 1 + np.floor(weights / weights.sum() * (len(LABELS) - 50))
    assert np.abs(np.array(sizes[1:]) - expected[1:]).max() <= 1  # the largest takes the rounding rest
