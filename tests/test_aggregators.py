"""Robust aggregators against direct computations on small arrays, and their stated guarantees."""

import itertools

import numpy as np
import pytest
import torch

from lightning_fed.federation.aggregators import (
    Bulyan,
    CenteredClip,
    Krum,
    Median,
    NormBound,
    TrimmedMean,
    make_aggregator,
)
from lightning_fed.federation.server_aggregation import screen


def _updates(rows: np.ndarray, split=(3, 2)) -> list[list[torch.Tensor]]:
    """Each row of ``rows`` as one device's update of two flat tensors."""
    return [list(torch.from_numpy(row.astype(np.float32)).split(list(split))) for row in rows]


def _flat(update) -> np.ndarray:
    return torch.cat(update).double().numpy()


ROWS = np.array(
    [
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [2.0, 1.0, 0.0, 4.5, 5.5],
        [1.5, 2.5, 3.5, 3.5, 4.5],
        [0.5, 1.5, 2.0, 4.0, 6.0],
        [1.2, 2.2, 2.8, 4.2, 5.2],
        [-50.0, 80.0, 900.0, -3.0, 1e4],
    ],
)  # fmt: skip  five honest devices near each other, one attacker far away


@pytest.mark.parametrize("n", [5, 6])
def test_median_and_trimmed_mean_are_numpy_s_per_coordinate(n):
    rows = ROWS[:n]
    assert np.allclose(_flat(Median()(_updates(rows))), np.median(rows, axis=0), rtol=0, atol=1e-6)
    for beta in (0.0, 0.2, 0.34, 0.49):
        cut = int(np.floor(beta * n))
        expected = np.sort(rows, axis=0)[cut : n - cut].mean(axis=0)
        assert np.allclose(_flat(TrimmedMean(beta)(_updates(rows))), expected, rtol=0, atol=1e-5), beta


def _krum_choice(rows: np.ndarray, f: int) -> int:
    n = len(rows)
    scores = []
    for i in range(n):
        distances = sorted(float(((rows[i] - rows[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(distances[: n - f - 2]))
    return int(np.argmin(scores))


def test_krum_chooses_the_update_closest_to_its_n_minus_f_minus_2_neighbours_and_multi_krum_averages():
    krum = Krum(f=1)
    chosen = krum(_updates(ROWS))
    assert krum.chosen == [_krum_choice(ROWS, 1)] and np.allclose(
        _flat(chosen), ROWS[krum.chosen[0]], atol=1e-6
    )
    multi = Krum(f=1, m=3)
    average = multi(_updates(ROWS))
    assert 5 not in multi.chosen and np.allclose(_flat(average), ROWS[multi.chosen].mean(0), atol=1e-5)


def test_bulyan_is_krum_selection_then_the_mean_of_the_values_closest_to_the_median():
    rng = np.random.default_rng(0)
    rows = np.vstack([rng.normal(0, 1, (6, 5)), [[1e3, -1e3, 5e2, 0, 7e2]]])  # n = 7 = 4f + 3, f = 1
    f, selected, left = 1, [], list(range(7))
    while len(selected) < 7 - 2 * f:
        pick = left[_krum_choice(rows[left], f)] if len(left) > f + 2 else left[0]
        selected.append(pick)
        left.remove(pick)
    chosen = rows[selected]
    median = np.median(chosen, axis=0)
    beta = len(selected) - 2 * f
    expected = np.array(
        [
            chosen[np.argsort(np.abs(chosen[:, j] - median[j]), kind="stable")[:beta], j].mean()
            for j in range(5)
        ]
    )
    assert 6 not in selected
    assert np.allclose(_flat(Bulyan(f)(_updates(rows))), expected, atol=1e-5)


def test_norm_bound_and_centered_clip_against_their_formulas():
    rows = ROWS[:4] * np.array([[1.0], [10.0], [0.1], [3.0]])
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    expected = (rows * np.minimum(1.0, 5.0 / norms)).mean(0)
    assert np.allclose(_flat(NormBound(5.0)(_updates(rows))), expected, atol=1e-5)
    clip, v = CenteredClip(tau=2.0, iterations=3), np.zeros(5)
    for _ in range(2):  # two rounds: the second starts from the first's aggregate
        got = _flat(clip(_updates(rows)))
        for _ in range(3):
            away = rows - v
            v = v + (away * np.minimum(1.0, 2.0 / np.linalg.norm(away, axis=1, keepdims=True))).mean(0)
        assert np.allclose(got, v, atol=1e-4)
    restored = CenteredClip(tau=2.0, iterations=3)
    restored.load_state_dict(clip.state_dict())
    assert torch.equal(restored.center, clip.center)


def test_centered_clip_starts_from_zeros_on_the_updates_device():
    """The first round's centre is made where the updates are (a GPU's, in a run on one); the meta
    device stands in for it."""
    updates = [[torch.ones(3, device="meta")], [torch.zeros(3, device="meta")]]
    assert CenteredClip(tau=1.0, iterations=2)(updates)[0].device.type == "meta"


@pytest.mark.parametrize("aggregator", [Median(), TrimmedMean(0.3), Krum(1), Krum(1, 2)])
def test_f_attackers_of_unbounded_scale_leave_the_result_within_the_honest_values_range(aggregator):
    """The breakdown points: with f < n/2 (median), f < beta n (trimmed mean), n > 2f + 2 (Krum),
    one attacker at any scale cannot move a coordinate outside the honest devices' range."""
    honest = ROWS[:5]
    for scale, sign in itertools.product((1e3, 1e9, 1e30), (1.0, -1.0)):
        rows = np.vstack([honest, sign * scale * np.ones((1, 5))])
        result = _flat(aggregator(_updates(rows)))
        assert np.all(result >= honest.min(0) - 1e-6) and np.all(result <= honest.max(0) + 1e-6), scale


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "trimmed_mean:0.5",
            r"^aggregator 'trimmed_mean:0.5': trimmed_mean's trim fraction must be in \[0, 0.5\)",
        ),
        ("trimmed_mean:-0.1", r"trim fraction must be in \[0, 0.5\), got -0.1$"),
        ("krum:-1", r"^aggregator 'krum:-1': krum's number of faulty devices must be an integer >= 0"),
        ("krum:x", r"^aggregator 'krum:x': 'krum:x' has a value that is not a number$"),
        ("mediun", r"^aggregator 'mediun': unknown or malformed; aggregators are mean, median, "),
        ("krum", r"^aggregator 'krum': unknown or malformed"),
        ("norm_bound:0", r"norm_bound's bound must be a finite number > 0, got 0$"),
        ("centered_clip:1:0", r"centered_clip's iterations must be an integer >= 1, got 0$"),
        ("centered_clip:0", r"centered_clip's radius must be a finite number > 0, got 0"),
        ("multi_krum:1:0", r"multi_krum's M must be an integer >= 1, got 0$"),
    ],
)
def test_a_bad_aggregator_is_a_one_line_error_naming_it(spec, message):
    with pytest.raises(ValueError, match=message) as error:
        make_aggregator(spec)
    assert "\n" not in str(error.value)


def test_a_round_too_small_for_krum_or_bulyan_is_a_one_line_error_saying_what_it_needs():
    with pytest.raises(ValueError, match=r"^krum:2 needs more than 2f \+ 2 = 6 updates a round, got 6$"):
        Krum(2).check_round(6)
    with pytest.raises(ValueError, match=r"^bulyan:1 needs at least 4f \+ 3 = 7 updates a round, got 6$"):
        Bulyan(1).check_round(6)
    Krum(2).check_round(7)
    Bulyan(1).check_round(7)


def test_the_mask_check_zeroes_exactly_what_lies_outside_the_public_mask_and_counts_the_non_zeros():
    """Values outside the mask are zeroed and each non-zero one counted (a zero sent there is no
    lie); a tensor with no public mask (None) passes as it is."""
    update = [torch.tensor([1.0, 2.0, 0.0, -3.0]), torch.tensor([5.0, 6.0])]
    keeps = [torch.tensor([True, False, False, False]), None]
    screened, rejected = screen(update, keeps)
    assert [t.tolist() for t in screened] == [[1.0, 0.0, 0.0, 0.0], [5.0, 6.0]]
    assert rejected == 2  # 2.0 and -3.0; the 0.0 outside the mask is not counted
    assert screen(update, [torch.ones(4, dtype=torch.bool), None])[1] == 0
