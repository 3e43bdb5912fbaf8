"""Client-level DP (DP-FedAvg): what is sent is bounded, the noise is what it says, the accountant agrees."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from callbacks import PrivacyMonitor, RunCheckpoint
from datamodules import FederatedDataModule
from lightning_fed import FederatedStrategy
from lightning_fed.communication import make_codec
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.config import FederationConfig
from lightning_fed.federation.fedavg import FedAvg
from lightning_fed.federation.rounds import RoundSchedule
from lightning_fed.federation.stages import Sending, Way
from lightning_fed.nn import variational
from lightning_fed.privacy import ClipToNorm, DPFedAvg, GaussianNoise, PrivacyAccountant
from lightning_fed.privacy.clipping import message_norm
from modules.classifier import SparseVDClassifier
from tests.conftest import N_TRAIN

ROOT = Path(__file__).resolve().parents[1]
CROSSCHECK = ROOT / "results" / "dp_crosscheck.json"


# ----------------------------------------------------------------------------------- clipping
def _messages() -> list[list[torch.Tensor]]:
    """Messages of norms from 0.01 to 100, in two tensors, fixed (a generator seeded once)."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for scale in (0.01, 0.3, 1.0, 3.0, 100.0):
        first, second = torch.randn(500, generator=generator), torch.randn(37, generator=generator)
        norm = message_norm([first, second])
        out.append([first * scale / norm, second * scale / norm])
    return out


@pytest.mark.parametrize("codec", [None, "qsgd:8", "qsgd:2", "fp16", "sign", "topk:0.1", "topk:0.1+qsgd:4"])
def test_what_the_receiver_decodes_is_within_the_clip_whatever_the_codec(codec):
    """QSGD rounds up at random and fp16 to nearest: both can raise a norm; the stage writes again."""
    way = Way([ClipToNorm(1.0)], make_codec(codec))
    for index, message in enumerate(_messages()):
        for step in range(5):
            sent = way.send(message, Sending({}, step=step, seed=(7, index, step)))
            assert message_norm(sent.decoded()) <= 1.0


def test_a_message_within_the_clip_is_sent_as_it_is_and_one_above_is_scaled_onto_it():
    way = Way([ClipToNorm(1.0)], make_codec(None))
    small, large = _messages()[1], _messages()[3]
    sent = way.send(small, Sending({}, step=0, seed=0))
    assert all(torch.equal(d, t) for d, t in zip(sent.decoded(), small, strict=True))
    decoded = way.send(large, Sending({}, step=0, seed=0)).decoded()
    assert message_norm(decoded) == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(decoded[0] * 3.0, large[0], rtol=1e-5, atol=0)  # the direction kept


def test_the_clip_comes_after_every_other_honest_stage_and_before_an_attack():
    compression = Compression("topk:0.1+qsgd:8", error_feedback=True)
    compression.set_clip(ClipToNorm(2.0))
    assert repr(compression.upload_way) == (
        "Way(MaskByAlpha -> ErrorFeedback -> topk:0.1 -> ClipToNorm(2) -> SparseCodec(qsgd:8))"
    )


# -------------------------------------------------------------------------------------- noise
def test_the_noise_has_standard_deviation_sigma_c_and_mean_zero():
    """n = 200,000 draws: the sample variance over (sigma C)^2 has standard deviation sqrt(2 / n) =
    0.0032, the mean over sigma C one of 1 / sqrt(n) = 0.0022; six of each is a 1e-9 chance."""
    n = 200_000
    noise = GaussianNoise(noise_multiplier=1.5, clip=0.4, seed=11).draw([150_000, 50_000], None, step=3)
    values = torch.cat(noise).double()
    std = 1.5 * 0.4
    assert abs(float(values.var()) / std**2 - 1) < 6 * math.sqrt(2 / n)
    assert abs(float(values.mean())) / std < 6 / math.sqrt(n)


def test_the_noise_is_a_function_of_seed_and_round_alone():
    noise = GaussianNoise(1.0, 1.0, seed=5)
    first, again = noise.draw([10], None, step=2), GaussianNoise(1.0, 1.0, seed=5).draw([10], None, step=2)
    assert torch.equal(first[0], again[0])
    assert not torch.equal(first[0], noise.draw([10], None, step=3)[0])
    assert not torch.equal(first[0], GaussianNoise(1.0, 1.0, seed=6).draw([10], None, step=2)[0])


def test_under_a_public_mask_exactly_its_kept_coordinates_are_noised():
    keep = torch.arange(1000) % 3 == 0
    noise = GaussianNoise(1.0, 1.0, seed=0).draw([1000, 7], [keep, None], step=0)
    assert torch.equal(noise[0] != 0, keep)  # a normal draw is never exactly zero
    assert bool((noise[1] != 0).all())


def test_the_denominator_is_the_expected_count_not_the_reporting_one():
    noise = GaussianNoise(0.0, 1.0, seed=0)
    total = [torch.tensor([3.0, -6.0])]
    assert noise.noised_average(total, [2], expected=6.0, keeps=None, step=0)[0].tolist() == [0.5, -1.0]
    assert noise.noised_average(None, [2], expected=6.0, keeps=None, step=0)[0].tolist() == [0.0, 0.0]


# ---------------------------------------------------------------------------------- accountant
def _crosscheck() -> list[dict]:
    return json.loads(CROSSCHECK.read_text())["rows"]


def test_the_pld_accountant_agrees_with_microsoft_s_prv_accountant_within_its_stated_error():
    """results/dp_crosscheck.json: prv-accountant's bounds on epsilon, written by the command in
    it (another library, another method); ours must fall within them, up to PLD's grid of 1e-3."""
    rows = _crosscheck()
    assert len(rows) >= 4
    for row in rows:
        ours = PrivacyAccountant(row["sigma"], row["delta"], row["num_devices"], row["per_round"], "poisson")
        low, _, high = row["prv_epsilon"]
        assert low - 2e-3 <= ours.epsilon(row["rounds"]) <= high + 2e-3, row


def test_the_rdp_accountant_is_an_upper_bound_at_most_a_fifth_above_the_prv_estimate():
    for row in _crosscheck():
        rdp = PrivacyAccountant(
            row["sigma"], row["delta"], row["num_devices"], row["per_round"], "poisson", "rdp"
        )
        low, estimate, _ = row["prv_epsilon"]
        assert low <= rdp.epsilon(row["rounds"]) <= 1.2 * estimate, row


def test_calibration_gives_the_smallest_noise_within_the_target():
    accountant = PrivacyAccountant(1.0, 1e-5, 1000, 50, "poisson")
    sigma = accountant.calibrated(target_epsilon=3.0, rounds=100)
    assert PrivacyAccountant(sigma, 1e-5, 1000, 50, "poisson").epsilon(100) <= 3.0
    assert PrivacyAccountant(sigma - 2e-3, 1e-5, 1000, 50, "poisson").epsilon(100) > 3.0


def test_the_budget_s_rounds_are_the_last_within_it():
    accountant = PrivacyAccountant(1.0, 1e-5, 100, 10, "poisson")
    rounds = accountant.rounds_within(4.0, limit=500)
    assert 0 < rounds < 500
    assert accountant.epsilon(rounds) <= 4.0 < accountant.epsilon(rounds + 1)


def test_sampling_exactly_k_is_accounted_as_replacing_one_device_at_twice_the_sensitivity():
    exact = PrivacyAccountant(2.0, 1e-5, 1000, 50, "uniform")
    assert exact.kind == "rdp" and exact.neighbours == "replace one device"
    assert exact.round_event().event.noise_multiplier == 1.0  # sigma C over a sensitivity of 2C
    everyone = PrivacyAccountant(2.0, 1e-5, 16, 16, "uniform")
    assert (
        everyone.neighbours == "add or remove one device" and everyone.round_event().noise_multiplier == 2.0
    )


# -------------------------------------------------------------------------------- poisson rounds
def test_poisson_sampling_draws_each_device_with_probability_k_over_n():
    """2,000 rounds of 100 devices at q = 0.1: each device's count is Binomial(2000, 0.1), mean 200,
    standard deviation 13.4; the 100 counts' mean within 6 / sqrt(100) of that, none beyond 7 sd."""
    schedule = RoundSchedule(100, 10, "poisson", seed=4)
    counts = np.zeros(100)
    sizes = set()
    for r in range(2000):
        sampled = schedule.round(r).sampled
        counts[list(sampled)] += 1
        sizes.add(len(sampled))
    sd = math.sqrt(2000 * 0.1 * 0.9)
    assert abs(counts.mean() - 200) < 6 * sd / 10
    assert np.abs(counts - 200).max() < 7 * sd
    assert len(sizes) > 5  # the round's size varies


# ------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dp_clip": 0.0, "dp_noise_multiplier": 1.0}, "dp_clip must be a finite number > 0, got 0.0"),
        ({"dp_clip": 1.0}, "dp_clip needs dp_noise_multiplier, or target_epsilon to calibrate it"),
        ({"dp_clip": 1.0, "dp_noise_multiplier": -0.5}, "dp_noise_multiplier must be a finite number >= 0"),
        ({"dp_clip": 1.0, "target_epsilon": 0}, "target_epsilon must be a finite number > 0, got 0"),
        ({"dp_clip": 1.0, "target_epsilon": 1, "dp_delta": 0.0}, r"dp_delta must be a number in \(0, 1\)"),
        ({"target_epsilon": 1.0}, "target_epsilon needs dp_clip"),
        ({"dp_clip": 1, "target_epsilon": 1, "sampling": "weighted"}, "not sampling='weighted'"),
        (
            {"dp_clip": 1, "target_epsilon": 1, "dp_accountant": "gdp"},
            "dp_accountant must be one of pld, rdp",
        ),
    ],
)
def test_bad_privacy_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message):
        FederationConfig(**options)


# ------------------------------------------------------------------------------- through a run
SEED = 3


def _fit(data_dir, root, max_steps=4, resume=None, every=None, algorithm_1=True, **options):
    pl.seed_everything(SEED, verbose=False)
    dm = FederatedDataModule("mnist", 4, batch_size=16, data_dir=data_dir, val_size=64)
    torch.manual_seed(0)
    network = variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)),
                          init_log_sigma2=-6.0)  # fmt: skip
    module = SparseVDClassifier(network, num_train=N_TRAIN, lr=1e-2, mask_log_sigma2=algorithm_1)
    options = {"devices_per_round": 2, "local_steps": 2, "sampling": "poisson", **options}
    strategy = FederatedStrategy(share_log_sigma2=algorithm_1, **options)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=root,
        callbacks=[RunCheckpoint(root / "checkpoints", every_n_steps=every), PrivacyMonitor(1)],
    )  # fmt: skip
    trainer.fit(module, dm, ckpt_path=resume)
    return module, strategy, trainer


def _spy(monkeypatch, owner, name: str) -> list[dict]:
    calls, original = [], getattr(owner, name)

    def spy(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append({"args": args, **kwargs, "result": result})
        return result

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_every_upload_is_clipped_and_the_server_averages_it_with_noise_on_the_public_mask(
    data_dir, tmp_path, monkeypatch
):
    uploads = _spy(monkeypatch, Compression, "encode_upload")
    draws = _spy(monkeypatch, GaussianNoise, "draw")
    aggregates = _spy(monkeypatch, FedAvg, "aggregate")
    _, strategy, _ = _fit(data_dir, tmp_path, dp_clip=0.05, dp_noise_multiplier=0.7)
    privacy, codec = strategy.server_aggregation.privacy, strategy.compression.upload_way.codec
    assert privacy.rounds == 4 and len(draws) == 4 and len(uploads) > 0
    pruned = 0
    for step, (draw, aggregate) in enumerate(zip(draws, aggregates, strict=True)):
        numels, keeps, noise = draw["args"][0], draw["args"][1], draw["result"]
        sent = [c for c in uploads if c["step"] == step]
        decoded = [codec.decode(c["result"], numels) for c in sent]
        for upload in decoded:
            assert message_norm(upload) <= 0.05
        for call in sent:  # the noise's mask is the one every device masked with: public
            assert all(
                torch.equal(k, m) for k, m in zip(keeps, call["args"][2], strict=True) if k is not None
            )
        pruned += sum(int((~k).sum()) for k in keeps if k is not None)
        for i, numel in enumerate(numels):
            total = sum((u[i] for u in decoded), torch.zeros(numel))
            expected = (total + noise[i]) / privacy.expected  # two devices a round on average
            assert torch.allclose(aggregate["args"][2][i].reshape(-1), expected, rtol=1e-5, atol=1e-7)
    assert privacy.expected == 2.0 and pruned > 0  # some weights were pruned, and not noised
    last = [c for c in uploads if c["step"] == 3]
    clip_norms = sorted(privacy.round_norms)
    assert len(clip_norms) == len(last)
    figures = privacy.norm_figures()
    assert figures["clipped_fraction"] == sum(n > 0.05 for n in clip_norms) / len(clip_norms)
    assert figures["median_norm"] == pytest.approx(float(np.median(clip_norms)), rel=1e-12)


def test_the_same_seed_gives_the_same_noise_and_model_and_the_noise_moves_it(data_dir, tmp_path):
    first, _, _ = _fit(data_dir, tmp_path / "a", dp_clip=0.05, dp_noise_multiplier=0.7)
    again, _, _ = _fit(data_dir, tmp_path / "b", dp_clip=0.05, dp_noise_multiplier=0.7)
    quiet, _, _ = _fit(data_dir, tmp_path / "c", dp_clip=0.05, dp_noise_multiplier=0.0)
    for (name, value), other in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(value, other), name
    assert any(
        not torch.equal(v, c) for v, c in zip(first.state_dict().values(), quiet.state_dict().values())
    )


@pytest.mark.parametrize(
    "adaptive", [{}, {"dp_target_quantile": 0.5, "dp_count_noise": 1.0}], ids=["fixed", "adaptive"]
)
def test_a_resumed_run_continues_the_accountant_the_clip_and_the_noise_exactly(data_dir, tmp_path, adaptive):
    options = {"dp_clip": 0.05, "dp_noise_multiplier": 0.7, **adaptive}
    straight, whole, _ = _fit(data_dir, tmp_path / "straight", **options)
    _fit(data_dir, tmp_path / "first", max_steps=2, every=2, **options)
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed, strategy, _ = _fit(data_dir, tmp_path / "second", resume=str(checkpoint), **options)
    ours, theirs = strategy.server_aggregation.privacy, whole.server_aggregation.privacy
    assert ours.rounds == theirs.rounds == 4 and ours.epsilon == theirs.epsilon and ours.clip == theirs.clip
    for (name, value), other in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), name


def test_the_run_stops_at_the_last_round_within_the_budget_and_logs_epsilon(data_dir, tmp_path):
    _, strategy, trainer = _fit(
        data_dir, tmp_path, max_steps=40, dp_clip=0.05, dp_noise_multiplier=0.6, target_epsilon=20.0
    )
    privacy = strategy.server_aggregation.privacy
    budget = PrivacyAccountant(0.6, 1e-5, 4, 2, "poisson").rounds_within(20.0, limit=40)
    assert 0 < budget < 40
    assert trainer.global_step == privacy.rounds == budget
    assert privacy.epsilon <= 20.0 < privacy.accountant.epsilon(budget + 1)
    assert trainer.callback_metrics["privacy/epsilon"] == pytest.approx(privacy.epsilon)


def test_a_calibrated_run_spends_its_target_over_its_planned_rounds(data_dir, tmp_path):
    _, strategy, trainer = _fit(data_dir, tmp_path, max_steps=6, dp_clip=0.05, target_epsilon=30.0)
    privacy = strategy.server_aggregation.privacy
    assert privacy.calibrated and trainer.global_step == privacy.rounds == 6
    assert 29.0 < privacy.epsilon <= 30.0


def test_the_paper_s_variant_is_refused_its_private_mask(data_dir, tmp_path):
    with pytest.raises(ValueError, match="dp_clip needs share_log_sigma2"):
        _fit(data_dir, tmp_path, algorithm_1=False, dp_clip=0.05, dp_noise_multiplier=1.0)


def test_dpfedavg_refuses_a_checkpoint_noised_with_another_sigma():
    dp = DPFedAvg(1.0, 1.0, 1e-5, 100, 10, "poisson", seed=0)
    with pytest.raises(ValueError, match="noised with noise multiplier 2, not 1;"):
        dp.load_state_dict({"rounds": 3, "clip": 1.0, "noise_multiplier": 2.0})


# ------------------------------------------------------------------------------ adaptive clipping
def test_without_count_noise_the_clip_settles_at_the_target_quantile_of_the_norms():
    """Fixed norms 1..100: each round C moves by a factor of at most exp(0.2 * 0.5) = 1.105, towards
    the norm below which half the updates lie, and stays within one such step of it."""
    from lightning_fed.privacy.adaptive_clip import AdaptiveClip
    from lightning_fed.privacy.clipping import ClipBound

    norms = np.arange(1, 101, dtype=float)
    bound = ClipBound(0.1)
    clip = AdaptiveClip(bound, target_quantile=0.5, learning_rate=0.2, count_noise=0.0, expected=100, seed=0)
    for step in range(300):
        clip.update(float((norms <= bound.value).sum()), step)
        if step >= 200:
            assert 50 / math.exp(0.2 * 0.5) - 1 <= bound.value <= 51 * math.exp(0.2 * 0.5), step


def test_a_round_nobody_reported_counts_as_none_within_the_clip():
    """No report (``within`` None) is a count of 0: without count noise the bound grows by exactly
    ``exp(learning_rate * target_quantile)``."""
    from lightning_fed.privacy.adaptive_clip import AdaptiveClip
    from lightning_fed.privacy.clipping import ClipBound

    bound = ClipBound(1.0)
    AdaptiveClip(bound, target_quantile=0.5, learning_rate=0.2, count_noise=0.0, expected=10, seed=0).update(
        None, 0
    )
    assert bound.value == pytest.approx(math.exp(0.2 * 0.5), rel=1e-12)


def test_the_count_noise_has_standard_deviation_sigma_b():
    """2,000 rounds: the noise recovered from each round's factor, exp(-eta (noised / E - gamma)), has
    sample variance within six of its standard deviations, sqrt(2 / 2000), of sigma_b^2."""
    from lightning_fed.privacy.adaptive_clip import AdaptiveClip
    from lightning_fed.privacy.clipping import ClipBound

    bound, eta, gamma, expected, within = ClipBound(1.0), 0.2, 0.5, 50.0, 20.0
    clip = AdaptiveClip(bound, gamma, eta, count_noise=2.5, expected=expected, seed=1)
    noise = []
    for step in range(2000):
        before = bound.value
        clip.update(within, step)
        noise.append((-math.log(bound.value / before) / eta + gamma) * expected - within)
    assert abs(float(np.var(noise)) / 2.5**2 - 1) < 6 * math.sqrt(2 / 2000)


def test_the_updates_noise_rises_so_that_the_pair_spends_what_sigma_does():
    from lightning_fed.privacy.adaptive_clip import update_noise_multiplier

    sigma, count = 1.2, 2.5
    update = update_noise_multiplier(sigma, count)
    assert update**-2 + (2 * count) ** -2 == pytest.approx(sigma**-2, rel=1e-12)
    with pytest.raises(ValueError, match=r"dp_count_noise=0.6 must exceed half the noise multiplier \(0.6\)"):
        update_noise_multiplier(sigma, 0.6)


def test_adaptive_clipping_sends_each_bit_as_a_message_counted_in_the_ledger(data_dir, tmp_path, monkeypatch):
    from lightning_fed.privacy import dp_fedavg

    uploads = _spy(monkeypatch, Compression, "encode_upload")
    bits = _spy(monkeypatch, type(dp_fedavg.BIT_CODEC), "encode")
    _, strategy, _ = _fit(
        data_dir, tmp_path, dp_clip=0.01, dp_noise_multiplier=0.5, dp_target_quantile=0.5, dp_count_noise=0.5
    )
    privacy = strategy.server_aggregation.privacy
    bit_calls = [c for c in bits if c["args"][0][0].numel() == 1]
    assert len(bit_calls) == len(uploads) > 0
    sent = sum(len(c["result"]) for c in uploads) + sum(len(c["result"]) for c in bit_calls)
    assert strategy.ledger.total.upload_bytes == sent
    assert privacy.clip != 0.01  # moved by the rounds' counts
    assert privacy.noise.noise_multiplier == pytest.approx((0.5**-2 - 1.0**-2) ** -0.5)


def test_with_error_feedback_each_round_is_within_the_clip_and_the_cut_part_waits_in_the_residual():
    """Error feedback sits before the clip: what the clip cuts joins the residual, sent in later rounds,
    each of them within C (the per-round bound the accountant composes)."""
    compression = Compression("topk:0.5", error_feedback=True)
    compression.set_clip(ClipToNorm(0.5))
    state, message = {}, _messages()[3]  # norm 3
    sent_total = [torch.zeros_like(t) for t in message]
    for step in range(40):
        update = message if step == 0 else [torch.zeros_like(t) for t in message]
        payload = compression.encode_upload(update, state, None, step=step, seed=(0, step))
        decoded = compression.codec.decode(payload, [t.numel() for t in message])
        assert message_norm(decoded) <= 0.5
        sent_total = [s + d for s, d in zip(sent_total, decoded, strict=True)]
    residual = state["residual"]
    for s, r, m in zip(sent_total, residual, message, strict=True):  # nothing lost: sent + kept = given
        assert torch.allclose(s + r.reshape(-1), m, atol=1e-5)


def test_a_delta_not_below_one_over_n_is_warned_about(data_dir, tmp_path):
    said = r"^dp_delta=0.3 is not below 1/N = 0.25: a mechanism that releases one device's data whole would "
    with pytest.warns(UserWarning, match=said + r"meet it; choose a delta well below 1/N$"):
        _fit(data_dir, tmp_path, max_steps=1, dp_clip=0.05, dp_noise_multiplier=1.0, dp_delta=0.3)
