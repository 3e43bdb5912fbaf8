"""SCAFFOLD (examples/scaffold.py), written against the public algorithm interface, run by the
unchanged strategy, against a direct single-process implementation of its update rule."""

import copy

import pytest
import torch
import torch.nn.functional as F

from examples.scaffold import Scaffold
from lightning_fed import FederatedStrategy
from lightning_fed.federation.rounds import RoundSchedule
from tests.test_rounds import _fit, _tiny_dense

LR, STEPS, ROUNDS, DEVICES, PER_ROUND = 0.1, 3, 5, 4, 2


def _scaffold_by_hand(start, streams, failure_rate: float):
    """Karimireddy et al. 2020, Algorithm 1 with option II, on the strategy's batches and rounds."""
    schedule = RoundSchedule(DEVICES, PER_ROUND, failure_rate=failure_rate, seed=3)
    x = copy.deepcopy(start)
    zeros = [torch.zeros_like(p) for p in x.parameters()]
    c, c_i, drawn = list(zeros), {d: list(zeros) for d in range(DEVICES)}, [0] * DEVICES
    for r in range(ROUNDS):
        delta_y, delta_c = [], []
        reporting = schedule.round(r).reporting
        for device in reporting:
            y = copy.deepcopy(x)
            for i in range(STEPS):
                images, labels = streams.batch(device, drawn[device] + i)
                y.zero_grad()
                F.cross_entropy(y(images), labels).backward()
                with torch.no_grad():
                    for p, ci, cs in zip(y.parameters(), c_i[device], c, strict=True):
                        p -= LR * (p.grad - ci + cs)
            drawn[device] += STEPS
            with torch.no_grad():
                moved = [xp - yp for xp, yp in zip(x.parameters(), y.parameters(), strict=True)]
                new = [ci - cs + m / (STEPS * LR) for ci, cs, m in zip(c_i[device], c, moved, strict=True)]
            delta_y.append(moved)
            delta_c.append([n - o for n, o in zip(new, c_i[device], strict=True)])
            c_i[device] = new
        if not reporting:
            continue
        with torch.no_grad():
            for k, p in enumerate(x.parameters()):
                p -= torch.stack([d[k] for d in delta_y]).mean(0)
            c = [cs + len(reporting) / DEVICES * torch.stack([d[k] for d in delta_c]).mean(0)
                 for k, cs in enumerate(c)]  # fmt: skip
    return x, c


@pytest.mark.parametrize("failure_rate", [0.0, 0.3])
def test_scaffold_through_the_strategy_equals_its_update_rule_written_out(data_dir, failure_rate):
    start = _tiny_dense()
    algorithm = Scaffold()
    strategy = FederatedStrategy(
        algorithm=algorithm, devices_per_round=PER_ROUND, local_steps=STEPS, failure_rate=failure_rate,
        client_optimizer="sgd", client_lr=LR,
    )  # fmt: skip
    module, dm, trainer = _fit(data_dir, strategy, copy.deepcopy(start), max_steps=ROUNDS)
    streams = next(iter(dm.device_streams(list(range(DEVICES)), full_batches=False)))
    reference, server_c = _scaffold_by_hand(start, streams, failure_rate)
    for ours, theirs in zip(module.network.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    for ours, theirs in zip(algorithm.server_c, server_c, strict=True):
        assert torch.allclose(ours, theirs.reshape(-1), atol=1e-4), (ours - theirs.reshape(-1)).abs().max()
    # both ways a message holds two model-sized parts: the model and c down, the delta and c_i's
    # change up; the lossless codec sends their non-zero values (c is zero in the first round)
    numel, total = sum(p.numel() for p in start.parameters()), strategy.ledger.total
    assert total.sampled * numel < total.download <= total.sampled * 2 * numel
    assert total.reported * numel < total.upload <= total.reported * 2 * numel


def test_scaffold_refuses_a_client_optimizer_its_rule_does_not_hold_for(data_dir):
    strategy = FederatedStrategy(algorithm=Scaffold(), devices_per_round=2, local_steps=2)
    with pytest.raises(ValueError, match=r"^Scaffold needs client_optimizer='sgd'"):
        _fit(data_dir, strategy, _tiny_dense(), max_steps=1)
