"""Worker momentum: each device sends its own running average of its updates."""

import pytest
import torch
from torch import nn

from lightning_fed import FederatedStrategy
from lightning_fed.communication import make_codec
from lightning_fed.federation.attacks import make_attack
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.stages import Sending, Way
from lightning_fed.federation.worker_momentum import WorkerMomentum
from lightning_fed.nn import variational
from tests.helpers.small_fit import small_fit


def test_a_device_sends_beta_m_plus_one_minus_beta_u_and_keeps_it():
    beta, state = 0.75, {}
    way = Way([WorkerMomentum(beta)], make_codec(None))
    updates = [torch.tensor([8.0, -4.0, 0.0]), torch.tensor([0.0, 4.0, 16.0]), torch.tensor([4.0, 4.0, 4.0])]
    expected = torch.zeros(3)
    for step, update in enumerate(updates):
        sent = way.send([update], Sending(state, step=step, seed=0)).decoded()[0]
        expected = beta * expected + (1 - beta) * update  # powers of two: exact in float32
        assert torch.equal(sent, expected) and torch.equal(state["momentum"][0], expected)


def test_a_pruned_weight_s_momentum_is_dropped_and_never_sent():
    state, way = {}, Way([WorkerMomentum(0.5)], make_codec(None))
    way.send([torch.tensor([2.0, 2.0])], Sending(state, step=0, seed=0, keeps=[torch.tensor([True, True])]))
    pruned = torch.tensor([True, False])
    sent = way.send([torch.tensor([2.0, 0.0])], Sending(state, step=1, seed=0, keeps=[pruned])).decoded()[0]
    assert sent.tolist() == [1.5, 0.0] and state["momentum"][0].tolist() == [1.5, 0.0]


def test_the_momentum_comes_after_the_mask_before_error_feedback_and_the_attack_replaces_it():
    compression = Compression("topk:0.5", error_feedback=True, worker_momentum=0.9)
    compression.set_attack(make_attack("sign_flip", [1]))
    stages = repr(compression.upload_way)
    order = "Way(MaskByAlpha -> WorkerMomentum(0.9) -> ErrorFeedback -> topk:0.5 -> SignFlip"
    assert stages.startswith(order)
    assert compression.feedback_kinds == ("residual", "momentum")
    honest, attacker = {}, {}
    for device, state in ((0, honest), (1, attacker)):
        update = [torch.tensor([2.0, 4.0])]
        sent = compression.upload_way.send(update, Sending(state, step=0, seed=0, sender=device))
        assert torch.allclose(state["momentum"][0], torch.tensor([0.2, 0.4]))  # both keep their momentum
    assert torch.allclose(sent.decoded()[0], torch.tensor([0.0, -0.4]))  # the attacker's, flipped


def _network():
    return variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)))


def _fit(data_dir, root, max_steps, resume=None, every=None, **options):
    return small_fit(data_dir, root, _network, FederatedStrategy(**options), max_steps, resume, every)


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_each_device_keeps_its_momentum_through_a_checkpoint(data_dir, tmp_path, store):
    options = {"worker_momentum": 0.9, "devices_per_round": 2, "device_store": store}
    whole, whole_strategy = _fit(data_dir, tmp_path / "whole", max_steps=4, **options)
    _fit(data_dir, tmp_path / "half", max_steps=2, every=2, **options)
    ckpt = str(tmp_path / "half" / "checkpoints" / "last.ckpt")
    resumed, resumed_strategy = _fit(data_dir, tmp_path / "resumed", max_steps=4, resume=ckpt, **options)
    first, second = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    momenta = [whole_strategy.devices.row(d)[1].get("momentum") for d in range(4)]
    assert any(m is not None and any(t.any() for t in m) for m in momenta)
    for device, momentum in enumerate(momenta):
        again = resumed_strategy.devices.row(device)[1].get("momentum")
        assert (momentum is None) == (again is None)
        assert momentum is None or all(torch.equal(a, b) for a, b in zip(momentum, again, strict=True))


def test_a_first_message_is_one_minus_beta_times_the_update(data_dir, tmp_path):
    """Every device, one round, the server's plain step: with momentum, theta moves (1 - beta) as far."""
    moves = {}
    for beta in (0.0, 0.75):
        initial = {}

        def network(initial=initial):
            built = _network()
            initial.update({k: v.clone() for k, v in built.named_parameters()})
            return built

        options = {"server_optimizer": "fedavg", "server_lr": 1.0, "worker_momentum": beta}
        module, _ = small_fit(data_dir, tmp_path / str(beta), network, FederatedStrategy(**options), 1)
        trained = dict(module.network.named_parameters())
        moves[beta] = {k: trained[k].detach() - v for k, v in initial.items() if "sigma" not in k}
    for name, plain in moves[0.0].items():
        assert plain.abs().max() > 0
        assert torch.allclose(moves[0.75][name], 0.25 * plain, rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("beta", [1.0, -0.1, True])
def test_a_worker_momentum_outside_0_1_is_refused_naming_it(beta):
    with pytest.raises(ValueError, match=rf"^worker_momentum must be in \[0, 1\), got {beta!r}$"):
        FederatedStrategy(worker_momentum=beta)
