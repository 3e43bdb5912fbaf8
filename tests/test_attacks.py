"""Attacks: who attacks, what each one sends, seeded; honest devices pass untouched."""

import math
from statistics import NormalDist

import pytest
import torch

from lightning_fed.communication import make_codec
from lightning_fed.federation.attacks import choose_malicious, make_attack
from lightning_fed.federation.stages import Sending, Way

HONEST = [[torch.tensor([1.0, 2.0, -1.0])], [torch.tensor([3.0, 0.0, -2.0])], [torch.tensor([2.0, 1.0, 0.0])]]


def _send(attack, device: int, tensors, step: int = 0):
    sending = Sending({}, step=step, seed=(7, 0, device, step), sender=device)
    return Way([attack], make_codec(None)).send(tensors, sending).decoded()


def _round(attack, reporting, step: int = 0) -> dict[int, list[torch.Tensor]]:
    """Every reporting device's message, run in the host's order (honest first for omniscient attacks)."""
    attack.begin_round(step, reporting)
    sent = {}
    for device in attack.order(reporting):
        own = HONEST[device] if device < len(HONEST) else [torch.tensor([9.0, 9.0, 9.0])]
        sent[device] = _send(attack, device, own, step)
    return sent


def test_the_attackers_are_a_seeded_fraction_of_the_devices():
    drawn = choose_malicious(100, 0.2, seed=3)
    assert len(drawn) == 20 and drawn == sorted(set(drawn)) and all(0 <= d < 100 for d in drawn)
    assert choose_malicious(100, 0.2, seed=3) == drawn != choose_malicious(100, 0.2, seed=4)
    assert choose_malicious(16, 0.0, seed=0) == []


def test_the_attackers_are_distinct_devices_even_when_almost_all_attack():
    """Drawn without replacement: 9 of 10 devices are 9 different ones for every seed (a draw with
    replacement repeats one with probability 1 - 10! / 10^9 > 0.99 each time)."""
    for seed in range(20):
        drawn = choose_malicious(10, 0.9, seed=seed)
        assert len(drawn) == len(set(drawn)) == 9, seed


@pytest.mark.parametrize(
    "spec, expected",
    [("sign_flip", [-9.0, -9.0, -9.0]), ("scale:10", [90.0, 90.0, 90.0]), ("label_flip", [9.0, 9.0, 9.0])],
)
def test_an_attacker_forges_its_message_and_honest_devices_are_untouched(spec, expected):
    sent = _round(make_attack(spec, malicious=[3]), reporting=[0, 1, 2, 3])
    assert sent[3][0].tolist() == expected
    for device in range(3):
        assert torch.equal(sent[device][0], HONEST[device][0])


def test_gaussian_noise_is_seeded_by_run_device_and_step():
    attack = make_attack("gaussian:2", malicious=[3, 4])
    first = _send(attack, 3, [torch.zeros(4000)], step=5)[0]
    assert torch.equal(
        first, _send(make_attack("gaussian:2", malicious=[3, 4]), 3, [torch.zeros(4000)], step=5)[0]
    )
    assert not torch.equal(first, _send(attack, 4, [torch.zeros(4000)], step=5)[0])
    assert not torch.equal(first, _send(attack, 3, [torch.zeros(4000)], step=6)[0])
    assert abs(float(first.std()) - 2.0) < 6 * 2.0 / math.sqrt(
        2 * 4000
    )  # 6 standard errors of a std estimate


def test_a_little_is_enough_sends_the_honest_mean_minus_z_max_standard_deviations():
    sent = _round(make_attack("alie", malicious=[3]), reporting=[3, 0, 1, 2])  # the attacker listed first
    honest = torch.stack([u[0] for u in HONEST])
    n, f = 4, 1
    s = math.floor(n / 2 + 1) - f
    z = NormalDist().inv_cdf((n - s) / n)
    expected = honest.mean(0) - z * honest.std(0, unbiased=False)
    assert torch.allclose(sent[3][0], expected, atol=1e-6)
    fixed = _round(make_attack("alie:1.5", malicious=[3]), reporting=[0, 1, 2, 3])
    assert torch.allclose(fixed[3][0], honest.mean(0) - 1.5 * honest.std(0, unbiased=False), atol=1e-6)


def test_inner_product_manipulation_sends_minus_eps_times_the_honest_mean():
    sent = _round(make_attack("ipm:0.5", malicious=[3]), reporting=[0, 1, 2, 3])
    honest_mean = torch.stack([u[0] for u in HONEST]).mean(0)
    assert torch.allclose(sent[3][0], -0.5 * honest_mean)
    assert float((sent[3][0] * honest_mean).sum()) < 0  # the inner product with the true mean is negative


def test_label_flipping_reads_each_label_y_as_c_minus_1_minus_y():
    x, y = torch.zeros(4, 2), torch.tensor([0, 3, 9, 5])
    poisoned = make_attack("label_flip", malicious=[0]).poison((x, y), num_classes=10)
    assert poisoned[1].tolist() == [9, 6, 0, 4] and poisoned[0] is x


@pytest.mark.parametrize(
    "spec, message",
    [
        ("flip", r"^attack 'flip': unknown or malformed; attacks are sign_flip, scale:BOOST"),
        ("scale", r"^attack 'scale': unknown or malformed"),
        ("scale:x", r"^attack 'scale:x': 'scale:x' has a value that is not a number$"),
        ("gaussian:0", r"^attack 'gaussian:0': gaussian's SIGMA must be a finite number > 0, got 0.0$"),
        ("ipm:-1", r"ipm's EPS must be a finite number > 0, got -1.0$"),
    ],
)
def test_a_bad_attack_is_a_one_line_error_naming_it(spec, message):
    with pytest.raises(ValueError, match=message):
        make_attack(spec, malicious=[0])


def test_an_attack_names_itself_its_parameter_and_its_devices():
    shown = [
        repr(make_attack(spec, malicious=[3, 7])) for spec in ("alie", "alie:1.5", "ipm:0.1", "gaussian:1")
    ]
    assert shown == [
        "ALittleIsEnough(devices [3, 7])",
        "ALittleIsEnough(1.5, devices [3, 7])",
        "InnerProductManipulation(0.1, devices [3, 7])",
        "Gaussian(1, devices [3, 7])",
    ]


def test_label_flipping_reads_the_number_of_classes_from_the_data_or_else_the_module():
    from types import SimpleNamespace

    from lightning_fed.federation.attacks import attack_of

    config = SimpleNamespace(attack="label_flip", malicious_fraction=0.25)
    data = SimpleNamespace(
        datamodule=SimpleNamespace(info=SimpleNamespace(num_classes=7)), lightning_module=None
    )
    module = SimpleNamespace(datamodule=None, lightning_module=SimpleNamespace(hparams={"num_classes": 5}))
    assert attack_of(config, 8, seed=0, processes=1, trainer=data).num_classes == 7
    assert attack_of(config, 8, seed=0, processes=1, trainer=module).num_classes == 5
    with pytest.raises(
        ValueError, match=r"^attack='label_flip' needs the number of classes \(a FederatedDataModule\)$"
    ):
        attack_of(config, 8, seed=0, processes=1, trainer=None)
