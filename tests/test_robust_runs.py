"""Robust aggregation, attacks and the mask check through the strategy, as a run uses them."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from lightning_fed.communication import SparseCodec
from lightning_fed.federation.attacks import choose_malicious
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.transport import AllReduce
from lightning_fed.nn import variational
from modules.classifier import SparseVDClassifier
from tests.conftest import N_TRAIN

SEED = 3


def _fit(data_dir, root, max_steps=3, algorithm_1=False, **options):
    pl.seed_everything(SEED, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=16, data_dir=data_dir, val_size=64)
    torch.manual_seed(0)
    network = variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)),
                          init_log_sigma2=-6.0 if algorithm_1 else -10.0)  # fmt: skip
    module = SparseVDClassifier(network, num_train=N_TRAIN, lr=1e-2, mask_log_sigma2=algorithm_1)
    strategy = FederatedStrategy(share_log_sigma2=algorithm_1, **options)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        limit_val_batches=0, default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, dm)
    return strategy


def _spy(monkeypatch, name: str) -> list[dict]:
    calls, original = [], getattr(Compression, name)

    def spy(self, *args, **kwargs):
        payload = original(self, *args, **kwargs)
        calls.append({"args": args, **kwargs, "payload": payload})
        return payload

    monkeypatch.setattr(Compression, name, spy)
    return calls


def test_the_median_aggregate_is_numpy_s_median_of_the_decoded_uploads_attacker_included(
    data_dir, tmp_path, monkeypatch
):
    uploads, downloads = _spy(monkeypatch, "encode_upload"), _spy(monkeypatch, "encode_download")
    strategy = _fit(data_dir, tmp_path, aggregator="median", attack="scale:1000", malicious_fraction=0.25)
    attacker = choose_malicious(4, 0.25, strategy.seed)
    assert len(attacker) == 1 and len(uploads) == 12
    numels = strategy.plan.numels
    for step in range(3):
        sent = {c["sender"]: c for c in uploads if c["step"] == step}
        decoded = {d: torch.cat(SparseCodec().decode(c["payload"], numels)) for d, c in sent.items()}
        honest = {
            d: torch.cat([u * k if k is not None else u for u, k in zip(c["args"][0], c["args"][2])])
            for d, c in sent.items()
        }  # fmt: skip  what each device computed, masked
        (a,) = attacker
        assert torch.equal(decoded[a], 1000 * honest[a])  # the attacker's message, counted like anyone's
        assert all(torch.equal(decoded[d], honest[d]) for d in sent if d != a)
        (average,) = [torch.cat(c["args"][0]) for c in downloads if c["step"] == step]
        rows = np.stack([decoded[d].double().numpy() for d in sorted(decoded)])
        assert np.allclose(average.double().numpy(), np.median(rows, axis=0), rtol=1e-6, atol=1e-9)


def test_plain_averaging_follows_a_scaled_attacker_and_the_median_does_not(data_dir, tmp_path):
    """With a plain SGD server step (Adam would take the sign alone), 1000x one device's update
    moves the mean 250 times as far, the median by no more than the honest spread."""
    sgd = dict(server_optimizer="fedavg", server_lr=0.01)
    attacked = dict(attack="scale:1000", malicious_fraction=0.25, **sgd)
    plain = _fit(data_dir, tmp_path / "plain", max_steps=2, **attacked)
    median = _fit(data_dir, tmp_path / "median", max_steps=2, aggregator="median", **attacked)
    honest = _fit(data_dir, tmp_path / "honest", max_steps=2, **sgd)
    weights = {name: s.lightning_module.network[1].weight.detach() for name, s in
               (("plain", plain), ("median", median), ("honest", honest))}  # fmt: skip
    moved = {name: float((w - weights["honest"]).abs().max()) for name, w in weights.items()}
    assert moved["plain"] > 10 * moved["median"] > 0


def test_the_mask_check_zeroes_and_counts_what_an_attacker_sends_outside_the_public_mask(
    data_dir, tmp_path, monkeypatch
):
    """One round of Algorithm 1 with a device sending dense noise: checked, the average the server
    sends back is zero wherever the round's public M(alpha) prunes and the values are counted;
    unchecked, the noise goes through there."""
    attacked = dict(attack="gaussian:0.1", malicious_fraction=0.25, max_steps=1, algorithm_1=True)
    downloads = _spy(monkeypatch, "encode_download")
    checked = _fit(data_dir, tmp_path / "checked", enforce_mask=True, **attacked)
    unchecked = _fit(data_dir, tmp_path / "unchecked", **attacked)
    keeps = checked._public_keeps
    pruned = [~k for k in keeps if k is not None]
    assert sum(int(p.sum()) for p in pruned) > 0  # M(alpha) prunes: there is something to check
    (sent_checked,), (sent_unchecked,) = (
        [c["args"][0] for c in downloads[:1]],
        [c["args"][0] for c in downloads[1:]],
    )
    outside = [(t, ~k) for t, k in zip(sent_checked, keeps, strict=True) if k is not None]
    assert all(not t[where].any() for t, where in outside)
    assert any(t[~k].any() for t, k in zip(sent_unchecked, keeps, strict=True) if k is not None)
    rejected = checked.server_aggregation.total_rejected
    assert rejected == checked.server_aggregation.rejected_values > 0
    assert unchecked.server_aggregation.total_rejected == 0 and not unchecked.server_aggregation.needs_updates


def test_a_round_whose_size_krum_cannot_serve_is_a_one_line_error_at_set_up(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"^aggregator='krum:1': krum:1 needs more than 2f \+ 2 = 4 updates"):
        _fit(data_dir, tmp_path, aggregator="krum:1")


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"aggregator": "median", "aggregation": "weighted"},
            r"^aggregator='median' weighs every update alike",
        ),
        ({"aggregator": "krum:1", "failure_rate": 0.1}, r"^aggregator='krum:1' assumes the same number"),
        ({"enforce_mask": True}, r"^enforce_mask needs share_log_sigma2 and the mask"),
        ({"attack": "sign_flip"}, r"^attack='sign_flip' needs malicious_fraction > 0"),
        ({"malicious_fraction": 0.2}, r"^malicious_fraction=0.2 needs an attack"),
        ({"attack": "flip", "malicious_fraction": 0.2}, r"^attack 'flip': unknown or malformed"),
        ({"aggregator": "mediun"}, r"^aggregator 'mediun': unknown or malformed"),
        (
            {"attack": "sign_flip", "malicious_fraction": 1.0},
            r"^malicious_fraction must be in \[0, 1\), got 1.0$",
        ),
    ],
)
def test_bad_robustness_options_are_one_line_errors_naming_them(options, message):
    with pytest.raises(ValueError, match=message) as error:
        FederatedStrategy(**options)
    assert "\n" not in str(error.value)


def test_the_all_reduce_transport_refuses_to_hide_the_updates_a_robust_server_needs():
    with pytest.raises(ValueError, match=r"use transport='sparse', which carries every message"):
        AllReduce(SparseCodec(), [3], keep_updates=True)


def test_an_omniscient_attack_runs_in_one_process():
    from lightning_fed.federation.attacks import attack_of
    from lightning_fed.federation.config import FederationConfig

    config = FederationConfig(attack="alie", malicious_fraction=0.25)
    with pytest.raises(ValueError, match=r"^attack='alie' sees the round's honest updates .* got 2$"):
        attack_of(config, num_devices=8, seed=0, processes=2)
    assert attack_of(config, num_devices=8, seed=0, processes=1).malicious == frozenset(
        choose_malicious(8, 0.25, 0)
    )


def test_the_robustness_monitor_logs_each_round_s_rejected_values_and_krum_s_choice(data_dir, tmp_path):
    from callbacks import RobustnessMonitor

    pl.seed_everything(SEED, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=16, data_dir=data_dir, val_size=64)
    network = variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), init_log_sigma2=-6.0)
    module = SparseVDClassifier(network, num_train=N_TRAIN, lr=1e-2, mask_log_sigma2=True)
    strategy = FederatedStrategy(
        share_log_sigma2=True, enforce_mask=True, aggregator="multi_krum:0:2", attack="gaussian:0.1",
        malicious_fraction=0.25,
    )  # fmt: skip
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_steps=2, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        limit_val_batches=0, default_root_dir=tmp_path, callbacks=[RobustnessMonitor()],
    )  # fmt: skip
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    aggregation = strategy.server_aggregation
    assert float(metrics["robust/rejected_values"]) == aggregation.rejected_values > 0
    assert float(metrics["robust/chosen"]) == 2 == len(aggregation.chosen)
    attackers = sum(d in strategy.attack.malicious for d in aggregation.chosen)
    assert float(metrics["robust/chosen_attackers"]) == attackers
