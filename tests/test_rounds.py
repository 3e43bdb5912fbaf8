"""Rounds of the FedAvg family: sampling, failures, local steps, server optimizers, counted traffic."""

import copy
import json
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from lightning_fed.communication import SparseCodec, make_codec
from lightning_fed.federation import SharingPlan
from lightning_fed.federation.fedavg import FedAvg
from lightning_fed.federation.rounds import RoundSchedule, inclusion_probabilities
from lightning_fed.federation.server_optimizers import AdaptiveServerOptimizer, server_optimizer
from lightning_fed.federation.stages import MaskByAlpha, Sending, Way
from lightning_fed.nn import variational
from modules.classifier import SparseVDClassifier
from tests.conftest import N_TRAIN


def binomial_bound(trials: int, p: float, sigmas: float = 6.0) -> float:
    """A count's distance from its mean that a correct sampler exceeds with odds below 1e-8."""
    return sigmas * math.sqrt(trials * p * (1 - p)) + 1


# ---------------------------------------------------------------- the schedule
def test_rounds_are_seeded_sampled_without_replacement_and_uniform():
    schedule = RoundSchedule(num_devices=20, devices_per_round=5, seed=4)
    rounds = [schedule.round(r).sampled for r in range(2000)]
    assert all(len(set(s)) == 5 and list(s) == sorted(s) for s in rounds)
    assert rounds == [RoundSchedule(20, 5, seed=4).round(r).sampled for r in range(2000)]
    assert rounds != [RoundSchedule(20, 5, seed=5).round(r).sampled for r in range(2000)]
    counts = np.bincount(np.concatenate(rounds), minlength=20)
    assert np.abs(counts - 2000 * 5 / 20).max() < binomial_bound(2000, 5 / 20)


def test_weighted_sampling_draws_devices_in_proportion_to_their_shards():
    sizes = [10, 30, 60, 100]
    schedule = RoundSchedule(4, devices_per_round=1, sampling="weighted", seed=0, weights=sizes)
    counts = np.bincount([schedule.round(r).sampled[0] for r in range(4000)], minlength=4)
    for count, size in zip(counts, sizes, strict=True):
        assert abs(count - 4000 * size / 200) < binomial_bound(4000, size / 200)


@pytest.mark.parametrize(
    "sizes, k",
    [([10, 30, 60, 100], 2), ([5, 5, 10, 20, 60, 300], 3), ([1, 2, 3, 4, 5, 6, 7, 8], 5)],
)
def test_weighted_sampling_includes_each_device_in_proportion_to_its_shard(sizes, k):
    """K > 1: device i is in a round with probability K n_i / sum n (capped at 1, the rest sharing
    the remaining draws), and every round has exactly K devices. Counts over R rounds are binomial."""
    rounds = 20_000
    schedule = RoundSchedule(len(sizes), devices_per_round=k, sampling="weighted", seed=2, weights=sizes)
    drawn = [schedule.round(r).sampled for r in range(rounds)]
    assert {len(devices) for devices in drawn} == {k}
    counts = np.bincount(np.concatenate(drawn), minlength=len(sizes))
    expected = inclusion_probabilities(sizes, k)
    assert expected.sum() == pytest.approx(k) and expected.max() <= 1
    for count, probability in zip(counts, expected, strict=True):
        assert abs(count - rounds * probability) <= binomial_bound(rounds, probability)
    if sizes == [10, 30, 60, 100]:
        assert expected.tolist() == pytest.approx([0.1, 0.3, 0.6, 1.0])


def test_weighted_sampling_with_weighted_aggregation_is_refused():
    with pytest.raises(ValueError, match=r"^sampling='weighted' with aggregation='weighted' counts large"):
        FederatedStrategy(devices_per_round=2, sampling="weighted", aggregation="weighted")


def test_failed_devices_are_sampled_but_do_not_report_at_the_stated_rate():
    schedule = RoundSchedule(10, devices_per_round=10, failure_rate=0.3, seed=1)
    reported = sum(len(schedule.round(r).reporting) for r in range(1000))
    assert all(set(schedule.round(r).reporting) <= set(schedule.round(r).sampled) for r in range(50))
    assert abs(reported - 0.7 * 10_000) < binomial_bound(10_000, 0.7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices_per_round": 0}, r"^devices_per_round must be an integer in \[1, 8\], got 0$"),
        ({"devices_per_round": 9}, r"^devices_per_round must be an integer in \[1, 8\], got 9$"),
        ({"failure_rate": 1.0}, r"^failure_rate must be a number in \[0, 1\), got 1.0$"),
        ({"failure_rate": -0.1}, r"^failure_rate must be a number in \[0, 1\), got -0.1$"),
        ({"sampling": "zipf"}, r"^sampling must be one of uniform, weighted, poisson, got 'zipf'$"),
        ({"sampling": "weighted"}, r"^sampling='weighted' needs weights"),
    ],
)
def test_bad_schedules_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RoundSchedule(8, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"local_steps": 0}, r"^local_steps must be an integer >= 1, got 0$"),
        ({"local_steps": 2.5}, r"^local_steps must be an integer >= 1, got 2.5$"),
        ({"device_store": "ssd"}, r"^device_store must be one of auto, memory, disk, got 'ssd'$"),
        ({"local_epochs": 0}, r"^local_epochs must be an integer >= 1, got 0$"),
        ({"devices_per_round": 5, "num_devices": 4}, r"^devices_per_round=5 exceeds num_devices=4$"),
        ({"local_steps": 2, "local_epochs": 1}, r"^give local_steps or local_epochs, not both$"),
        ({"server_optimizer": "adam"}, r"^server_optimizer must be one of fedavg, fedavgm, fedadam"),
        ({"client_optimizer": "adam"}, r"^client_optimizer must be one of module, sgd, got 'adam'$"),
        ({"failure_rate": 1}, r"^failure_rate must be a number in \[0, 1\), got 1$"),
        ({"proximal_mu": -1.0}, r"^proximal_mu must be a finite number >= 0, got -1.0$"),
        ({"server_lr": 0.0}, r"^server_lr must be a finite number > 0, got 0.0$"),
    ],
)
def test_bad_round_options_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FederatedStrategy(**kwargs)


# ----------------------------------------------------------- server optimizers
def test_fedavg_with_lr_one_makes_the_global_model_the_average_of_the_devices():
    x = nn.Parameter(torch.tensor([1.0, 2.0]))
    locals_ = [torch.tensor([0.0, 2.0]), torch.tensor([1.0, 4.0])]
    x.grad = torch.stack([x.detach() - w for w in locals_]).mean(0)  # the pseudo-gradient
    server_optimizer("fedavg", [x]).step()
    assert torch.equal(x.detach(), torch.stack(locals_).mean(0))


def test_the_server_optimizer_takes_the_configured_rate_and_momentum():
    """FedAvgM's momentum and rate are the config's (a user's ``--server-momentum 0.5`` is not the
    default 0.9)."""
    from types import SimpleNamespace

    from lightning_fed.federation.config import FederationConfig
    from lightning_fed.federation.paper_protocol import configured_server_optimizer

    model = nn.Sequential(nn.Linear(3, 2))
    host = SimpleNamespace(lightning_module=model, plan=SharingPlan(model))
    config = FederationConfig(server_optimizer="fedavgm", server_lr=0.5, server_momentum=0.3)
    group = configured_server_optimizer(config, host).param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.5, 0.3)
    assert configured_server_optimizer(FederationConfig(), host) is None  # one step: the module's own


@pytest.mark.parametrize("rule", ["adam", "yogi", "adagrad"])
def test_adaptive_server_steps_follow_reddi_et_al(rule):
    beta1, beta2, lr, tau = 0.9, 0.99, 0.1, 1e-3
    x = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    opt = AdaptiveServerOptimizer([x], rule=rule, lr=lr, betas=(beta1, beta2), tau=tau)
    m, v, expected = (
        torch.zeros(3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
        x.detach().double(),
    )
    for g in ([0.3, -0.2, 0.0], [0.1, 0.4, -2.0]):
        g = torch.tensor(g, dtype=torch.float64)
        x.grad = g.float()
        opt.step()
        m = beta1 * m + (1 - beta1) * g
        if rule == "adam":
            v = beta2 * v + (1 - beta2) * g * g
        elif rule == "yogi":
            v = v - (1 - beta2) * g * g * torch.sign(v - g * g)
        else:
            v = v + g * g
        expected = expected - lr * m / (v.sqrt() + tau)
    assert torch.allclose(x.detach().double(), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- whole rounds
def _tiny_dense(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def _fit(data_dir, strategy, network, epochs=1, devices=4, batch_size=16, max_steps=-1, dense=True, **model):
    pl.seed_everything(3, verbose=False)
    dm = FederatedDataModule("mnist", devices, batch_size=batch_size, data_dir=data_dir, val_size=64)
    module = SparseVDClassifier(network, num_train=N_TRAIN, dense=dense, **model)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_epochs=epochs, max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, dm)
    return module, dm, trainer


def test_fedavg_with_local_steps_equals_a_hand_written_fedavg_loop(data_dir):
    """K = 2 of 4 devices, H = 3 local SGD steps, server FedAvg: the same model as a plain loop."""
    start = _tiny_dense()
    strategy = FederatedStrategy(devices_per_round=2, local_steps=3, client_optimizer="sgd", client_lr=0.1)
    module, dm, trainer = _fit(data_dir, strategy, copy.deepcopy(start), max_steps=5)
    assert trainer.global_step == 5

    schedule = RoundSchedule(4, 2, seed=3)
    streams = next(iter(dm.device_streams(list(range(4)), full_batches=False)))
    reference, drawn = copy.deepcopy(start), [0] * 4
    for r in range(5):
        deltas = []
        for device in schedule.round(r).reporting:
            local = copy.deepcopy(reference)
            opt = torch.optim.SGD(local.parameters(), lr=0.1)
            for i in range(3):
                x, y = streams.batch(device, drawn[device] + i)
                opt.zero_grad()
                F.cross_entropy(local(x), y).backward()
                opt.step()
            drawn[device] += 3
            deltas.append(
                [g.detach() - w.detach() for g, w in zip(reference.parameters(), local.parameters())]
            )
        with torch.no_grad():
            for k, param in enumerate(reference.parameters()):
                param -= torch.stack([d[k] for d in deltas]).mean(0)
    for ours, theirs in zip(module.network.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6), (ours - theirs).abs().max()
    numel = sum(p.numel() for p in start.parameters())
    total = strategy.ledger.total
    assert (total.sampled, total.reported) == (10, 10)
    assert total.download == 10 * numel  # the model, to every sampled device
    assert total.upload == 10 * numel  # a dense delta from every reporting device
    assert total.dense_values == 20 * numel


def test_every_device_every_round_one_step_is_the_paper_s_protocol(data_dir):
    """Named explicitly (K = N, H = 1), the rounds are the default's: same weights, same ledger."""
    runs = []
    for options in ({}, {"devices_per_round": 4, "local_steps": 1}):
        strategy = FederatedStrategy(**options)
        module, _, _ = _fit(data_dir, strategy, variational(_tiny_dense()), dense=False, lr=1e-2)
        assert strategy.synchronous
        runs.append((module.state_dict(), [vars(t) for t in strategy.ledger.history]))
    (first, ledger), (second, again) = runs
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert ledger == again and len(ledger) == 9  # ceil(144 / 16) rounds of an epoch


class _RecordingCodec(SparseCodec):
    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[list[torch.Tensor]] = []

    def encode(self, tensors, **kwargs):
        self.encoded.append([t.detach().clone() for t in tensors])
        return super().encode(tensors, **kwargs)


class _MaskRecorder(FedAvg):
    """Remembers, for each local update, the masks M(alpha) of the device as its round began."""

    def __init__(self) -> None:
        self.start_masks: list[dict[str, torch.Tensor]] = []

    def client_update(self, host, device, batches, start):
        self.start_masks.append({k: m.clone() for k, m in host.plan.masks(host.lightning_module).items()})
        return super().client_update(host, device, batches, start)


def test_a_weight_pruned_when_its_round_starts_is_never_sent_whatever_local_adam_does(data_dir):
    codec = _RecordingCodec()
    recorder = _MaskRecorder()
    strategy = FederatedStrategy(
        algorithm=recorder, devices_per_round=2, local_steps=4, codec=codec, failure_rate=0.25
    )
    network = variational(_tiny_dense(), init_log_sigma2=-9.0)
    with torch.no_grad():  # about half the weights start pruned (log_alpha = log_sigma2 - log theta^2 >= 3)
        network[1].weight.mul_(torch.where(torch.rand_like(network[1].weight) < 0.5, 1e-6, 1.0))
    _fit(data_dir, strategy, network, dense=False, lr=1e-2, max_steps=6)
    plan = strategy.plan
    assert strategy.download_codec is not codec  # sampled rounds send the model losslessly by default
    uploads = codec.encoded
    assert len(uploads) == len(recorder.start_masks) == strategy.ledger.total.reported > 0
    pruned_seen = 0
    for upload, masks in zip(uploads, recorder.start_masks, strict=True):
        for tensor, values in zip(plan.shared, upload, strict=True):
            if tensor.mask_of is None:
                continue
            pruned = ~masks[tensor.mask_of].reshape(-1)
            pruned_seen += int(pruned.sum())
            assert not values[pruned].any()
    assert pruned_seen > 0


def test_a_round_counts_the_model_to_every_sampled_device_and_an_update_from_every_reporting_one(data_dir):
    codec = _RecordingCodec()
    strategy = FederatedStrategy(
        devices_per_round=3, failure_rate=0.4, local_epochs=1, codec=codec, download_codec=codec
    )
    network = variational(_tiny_dense())
    _fit(data_dir, strategy, network, devices=6, dense=False, max_steps=8)
    schedule = RoundSchedule(6, 3, failure_rate=0.4, seed=3)
    position = 0
    for r, step in enumerate(strategy.ledger.history):
        expected = schedule.round(r)
        assert (step.sampled, step.reported) == (len(expected.sampled), len(expected.reporting))
        model = SparseCodec().encode(codec.encoded[position])
        sent = codec.encoded[position + 1 : position + 1 + step.reported]
        uploads = [SparseCodec().encode(u) for u in sent]
        assert step.download_bytes == step.sampled * len(model)
        assert step.upload_bytes == sum(len(u) for u in uploads)
        numels = [t.numel() for t in codec.encoded[position]]
        assert step.upload == sum(SparseCodec().read(u, numels)[1] for u in uploads)
        position += 1 + step.reported
    assert any(step.reported < step.sampled for step in strategy.ledger.history)


def test_local_epochs_take_each_device_s_whole_shard_with_a_short_last_batch(data_dir):
    seen: list[int] = []

    class Counting(SparseVDClassifier):
        def training_step(self, batch, batch_idx):
            seen.append(len(batch[1]))
            return super().training_step(batch, batch_idx)

    pl.seed_everything(3, verbose=False)
    dm = FederatedDataModule("mnist", 8, batch_size=32, data_dir=data_dir, val_size=64)  # 72 per device
    module = Counting(_tiny_dense(), num_train=N_TRAIN, dense=True)
    strategy = FederatedStrategy(devices_per_round=2, local_epochs=1)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_steps=3, logger=False, limit_val_batches=0,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, dm)
    assert seen == [32, 32, 8] * 6  # 3 rounds x 2 devices, each one pass over 72 samples
    assert trainer.num_training_batches == strategy.rounds_per_epoch(dm.batches_per_epoch) == 4


def test_fedprox_pulls_local_models_towards_the_round_s_model(data_dir):
    moved = {}
    for mu in (0.0, 10.0):
        strategy = FederatedStrategy(
            devices_per_round=1, local_steps=8, client_optimizer="sgd", client_lr=0.05, proximal_mu=mu
        )
        start = _tiny_dense()
        module, _, _ = _fit(data_dir, strategy, copy.deepcopy(start), max_steps=1)
        moved[mu] = sum((a - b).norm() ** 2 for a, b in zip(module.network.parameters(), start.parameters()))
    assert moved[10.0] < 0.8 * moved[0.0]


def test_sharing_plan_delta_masked_on_its_way_is_the_masked_pseudo_gradient():
    model = variational(nn.Sequential(nn.Linear(3, 2)))
    plan = SharingPlan(model)
    start = plan.values(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[0].bias.sub_(2.0)
    masks = {"0": torch.tensor([[True, False, True], [False, True, True]])}
    keeps = plan.keeps(masks)
    sent = Way([MaskByAlpha()], make_codec(None)).send(plan.delta(model, start), Sending({}, 0, 0, keeps))
    weight, bias = sent.decoded()
    assert weight.tolist() == [-1.0, 0.0, -1.0, 0.0, -1.0, -1.0] and bias.tolist() == [2.0, 2.0]


def _variant_run(data_dir, root, max_steps, store, resume=None, save=None):
    pl.seed_everything(3, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=16, data_dir=data_dir, val_size=64)
    module = SparseVDClassifier(variational(_tiny_dense()), num_train=N_TRAIN, lr=1e-2)
    strategy = FederatedStrategy(devices_per_round=2, local_steps=2, failure_rate=0.2, device_store=store)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        limit_val_batches=0, default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, dm, ckpt_path=resume)
    if save:
        trainer.save_checkpoint(save)
    states = strategy.devices.state_dict()
    params = {d: strategy.devices.row(d)[0] for d in range(4)}
    return module.state_dict(), params, states, [vars(t) for t in strategy.ledger.history]


def test_device_rows_on_disk_train_and_resume_as_in_memory(data_dir, tmp_path):
    """The variant's log_sigma2 of every device in a file: the same run, and a resume mid-epoch is exact."""
    whole = _variant_run(data_dir, tmp_path / "memory", 7, "memory")
    ckpt = tmp_path / "disk" / "half.ckpt"
    _variant_run(data_dir, tmp_path / "disk", 3, "disk", save=ckpt)
    folder = ckpt.with_name("half.ckpt.rows-0.step-3")
    saved = sorted(folder.glob("*.f32"))  # a file per device that trained, beside the schema header
    header = json.loads((folder / "schema.json").read_text())
    assert header["layout"] == [["network.1.log_sigma2", [10, 784]]]
    assert 1 <= len(saved) <= 4 and all(f.stat().st_size == 7840 * 4 for f in saved)  # its log_sigma2
    live = tmp_path / "disk" / "device-states" / "process-0"
    assert all(f.samefile(live / f.name) for f in saved)  # a save copies nothing: hard links to the rows
    resumed = _variant_run(data_dir, tmp_path / "disk2", 7, "disk", resume=str(ckpt))
    assert (tmp_path / "disk2" / "device-states" / "process-0").is_dir()
    (model, params, states, ledger), (model2, params2, states2, ledger2) = whole, resumed
    assert all(torch.equal(model[k], model2[k]) for k in model)
    for device in range(4):
        assert all(torch.equal(params[device][k], params2[device][k]) for k in params[device])
        assert states[device]["drawn"] == states2[device]["drawn"]
    assert ledger == ledger2 and any(s["drawn"] for s in states.values())


def test_a_device_untrained_at_a_disk_checkpoint_starts_from_the_run_s_initial_log_sigma2(data_dir, tmp_path):
    """A disk store saves no row for a device that has not trained; after a resume it must start
    where the run started, not from the resumed model's (the resident device's) log_sigma2."""
    whole = _variant_run(data_dir, tmp_path / "memory", 5, "memory")
    ckpt = tmp_path / "disk" / "early.ckpt"
    _, _, saved_states, _ = _variant_run(data_dir, tmp_path / "disk", 1, "disk", save=ckpt)
    assert any(state["params_at"] is None for state in saved_states.values())  # some never trained
    resumed = _variant_run(data_dir, tmp_path / "disk2", 5, "disk", resume=str(ckpt))
    (model, params, _, _), (model2, params2, _, _) = whole, resumed
    assert all(torch.equal(model[k], model2[k]) for k in model)
    for device in range(4):
        assert all(torch.equal(params[device][k], params2[device][k]) for k in params[device])


@pytest.mark.parametrize(
    ("client", "base"), [({}, 0.01), ({"client_optimizer": "sgd", "client_lr": 0.3}, 0.3)]
)
def test_the_cosine_schedule_sets_the_clients_learning_rate_each_epoch_of_local_steps(data_dir, client, base):
    """The module's scheduler steps its Adam, the clients' optimizer under local steps, and the
    clients' SGD follows it: the rate each round's local steps use is the base rate times
    ``cosine_factor`` of the round's epoch (1, 0.55, 0.1 over three epochs to a ratio of 0.1)."""
    used: list[float] = []

    class Recording(SparseVDClassifier):
        def on_train_start(self):
            optimizer = self.trainer.strategy.client_optimizer
            optimizer.register_step_post_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))

    pl.seed_everything(3, verbose=False)
    dm = FederatedDataModule("mnist", 8, batch_size=32, data_dir=data_dir, val_size=64)
    schedule = {"lr": 0.01, "lr_schedule": "cosine", "min_lr_ratio": 0.1}
    module = Recording(_tiny_dense(), num_train=N_TRAIN, dense=True, **schedule)
    strategy = FederatedStrategy(devices_per_round=2, local_steps=2, **client)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_epochs=3, limit_train_batches=2, logger=False,
        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, dm)
    per_epoch = 2 * 2 * 2  # 2 rounds x 2 devices x 2 local steps
    assert used == pytest.approx([base * f for f in (1.0, 0.55, 0.1) for _ in range(per_epoch)], rel=1e-12)
