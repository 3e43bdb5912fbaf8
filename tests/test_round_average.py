"""The logged training figures of a round: the mean over the round's devices, not the last one's."""

import pytest
import torch
from torch import nn

from lightning_fed import FederatedStrategy
from lightning_fed.nn import variational
from modules.classifier import SparseVDClassifier
from modules.round_average import RoundAverage
from tests.helpers.small_fit import small_fit


def _network():
    return variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)))


@pytest.mark.parametrize(
    "options",
    [{}, {"devices_per_round": 2, "local_steps": 3, "client_optimizer": "sgd"}],
    ids=["paper", "fedavg"],
)
def test_train_nll_is_the_mean_of_each_round_device_s_last_local_step(
    data_dir, tmp_path, monkeypatch, options
):
    seen = []  # (step, device, nll) of every local step
    original = SparseVDClassifier.elbo_terms

    def recording(self, logits, target):
        terms = original(self, logits, target)
        device = self.trainer.strategy.devices.current
        seen.append((self.trainer.global_step, device, float(terms["nll"])))
        return terms

    monkeypatch.setattr(SparseVDClassifier, "elbo_terms", recording)
    module, strategy = small_fit(data_dir, tmp_path, _network, FederatedStrategy(**options), max_steps=2)
    last_step = max(step for step, _, _ in seen)
    last = {device: nll for step, device, nll in seen if step == last_step}  # each device's last local step
    assert len(last) == (2 if options else 4)
    logged = float(module.trainer.callback_metrics["train/nll"])
    assert logged == pytest.approx(sum(last.values()) / len(last), rel=1e-6)
    assert any(abs(logged - nll) > 1e-4 for nll in last.values())  # not one device's figure


def test_a_round_in_which_nobody_reported_logs_nothing_and_the_next_starts_empty():
    average = RoundAverage(["train/nll"])
    assert average.mean(strategy=None) is None
    average.add(3, {"train/nll": torch.tensor(2.0)})
    assert float(average.mean(strategy=None)["train/nll"]) == 2.0
    assert average.mean(strategy=None) is None
