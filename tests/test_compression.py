"""The compression stack after the masks: value coders, top-k, error feedback, downlink, settings."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_fed import FederatedStrategy
from lightning_fed.communication import (
    QSGD,
    Codec,
    Float16,
    Float32,
    Payload,
    Sign,
    SparseCodec,
    TopK,
    make_codec,
)
from lightning_fed.communication.codecs import HEADER
from lightning_fed.federation.compression import UPLOAD, Compression
from lightning_fed.federation.error_feedback import ErrorFeedback, MomentumCorrection, ServerErrorFeedback
from lightning_fed.federation.sharing import SharingPlan
from lightning_fed.federation.stages import Sending, Way
from lightning_fed.nn import variational
from tests.helpers.small_fit import small_fit

RNG = np.random.default_rng(0)
VALUES = (RNG.standard_normal(5000) * RNG.exponential(1.0, 5000)).astype(np.float32)


def _round_trip(coder, values, seed=0):
    data = b"".join(bytes(c) for c in coder.write(values, np.random.default_rng(seed)))
    decoded, used = coder.read(memoryview(data), values.size)
    assert used == len(data) == coder.size(values.size)
    return decoded


def send_with_feedback(codec, update, residual, keeps, *, step, seed):
    """A device's payload and residual, through a way of error feedback and ``codec``."""
    state = {} if residual is None else {"residual": residual}
    payload = Way([ErrorFeedback()], codec).send(update, Sending(state, step, seed, keeps)).payload
    return payload, state["residual"]


def send_with_momentum_correction(codec, update, residual, velocity, keeps, momentum, *, step, seed):
    state = {name: v for name, v in (("residual", residual), ("velocity", velocity)) if v is not None}
    way = Way([MomentumCorrection(momentum), ErrorFeedback()], codec)
    payload = way.send(update, Sending(state, step, seed, keeps)).payload
    return payload, state["residual"], state["velocity"]


def send_downlink_with_feedback(codec, average, residual, *, step, seed):
    state = {} if residual is None else {"residual": residual}
    payload = Way([ServerErrorFeedback()], codec).send(average, Sending(state, step, seed)).payload
    return payload, state["residual"]


# --------------------------------------------------------------- value coders
def test_float32_is_exact_and_fp16_within_half_an_ulp_of_half_precision():
    assert np.array_equal(_round_trip(Float32(), VALUES), VALUES)
    half = _round_trip(Float16(), VALUES)
    assert np.all(np.abs(half - VALUES) <= np.abs(VALUES) * 2.0**-11 + 2.0**-25)  # normal, then subnormal


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("block", [None, 64])
def test_qsgd_is_within_one_level_of_each_value_and_packs_bits_per_value(bits, block):
    coder = QSGD(bits, block)
    decoded = _round_trip(coder, VALUES)
    levels = 2 ** (bits - 1) - 1
    blocks = [VALUES] if block is None else [VALUES[i : i + block] for i in range(0, VALUES.size, block)]
    scale = np.concatenate([np.full(b.size, np.abs(b).max()) for b in blocks])
    assert np.all(np.abs(decoded - VALUES) <= scale / levels * (1 + 1e-6))
    assert np.all(np.isin(np.round(decoded / scale * levels), np.arange(-levels, levels + 1)))
    assert coder.size(VALUES.size) == 4 * len(blocks) + math.ceil(VALUES.size * bits / 8)


@pytest.mark.parametrize("bits", [2, 8])
def test_qsgd_is_unbiased_over_many_draws(bits):
    values = VALUES[:200]
    draws = 2000
    mean = np.mean([_round_trip(QSGD(bits), values, seed) for seed in range(draws)], axis=0)
    # each draw is within one level of v, so its standard deviation is at most level / 2
    level = np.abs(values).max() / (2 ** (bits - 1) - 1)
    assert np.all(np.abs(mean - values) <= 6 * (level / 2) / math.sqrt(draws))


def test_sign_sends_the_sign_times_each_block_s_mean_magnitude():
    decoded = _round_trip(Sign(block=100), VALUES)
    for start in range(0, VALUES.size, 100):
        block = VALUES[start : start + 100]
        expected = np.where(block >= 0, 1.0, -1.0) * np.abs(block).mean()
        assert np.allclose(decoded[start : start + 100], expected, rtol=1e-6)
    assert Sign().size(5000) == 4 + 625


def test_a_sign_codec_never_turns_an_absent_entry_into_a_value():
    codec = SparseCodec(values=Sign())
    tensor = torch.zeros(1000)
    tensor[::3] = torch.arange(334, dtype=torch.float32) - 100  # a zero among the kept ones too
    decoded = codec.decode(codec.encode([tensor]), [1000])[0]
    assert torch.equal(decoded != 0, tensor != 0)


@pytest.mark.parametrize(
    "spec", ["float32", "fp16", "qsgd:8", "qsgd:4:256", "qsgd:2", "sign", "topk:0.01+qsgd:4"]
)
def test_payload_length_is_header_positions_and_the_coder_s_values(spec):
    """Each segment is its header, its positions and its coder's values, counted from what was sent
    (the input's support, or top-k's k of it), never from what decodes: sign and QSGD decode values
    that differ from the input but count the same."""
    codec = make_codec(spec)
    tensors = [torch.from_numpy(VALUES * (RNG.random(5000) < d)) for d in (0.01, 0.3, 1.0)]
    payload = codec.encode(tensors, step=0, seed=(0, 1))
    _, carried = codec.read(payload, [5000] * 3)  # the values the receiver counts from the bytes
    kept = math.ceil(0.01 * 5000) if spec.startswith("topk") else None
    exact, rice, counts = 0, 0, []
    for name, tensor in zip(codec.last_encodings, tensors, strict=True):
        support = int(tensor.count_nonzero())
        count = 5000 if name == "dense" else min(kept, support) if kept else support
        counts.append(count)
        positions = {"dense": 0, "indices": 4 * count, "bitmap": 625, "rice": None}[name]
        if positions is None:  # a byte of k, a uint32 stream length, then the stream
            rice += HEADER.size + 5 + codec.values.size(count)
        else:
            exact += HEADER.size + positions + codec.values.size(count)
    assert all(n in ("dense", "bitmap", "rice", "indices") for n in codec.last_encodings)
    assert (len(payload) == exact) if not rice else (len(payload) > exact + rice)
    assert carried == sum(counts)
    same = codec.encode(tensors, step=0, seed=(0, 1))
    assert same.data == payload.data  # seeded: the same message twice


# ----------------------------------------------------------------------- top-k
def test_topk_keeps_exactly_the_k_largest_magnitudes_and_warms_up_exponentially():
    kept = TopK(0.01).filter(VALUES, step=0)
    assert np.count_nonzero(kept) == 50
    assert np.abs(VALUES[kept == 0]).max() <= np.abs(kept[kept != 0]).min()
    warm = TopK(0.001, warmup_steps=4, start_density=0.1)
    assert [warm.density_at(s) for s in range(6)] == pytest.approx(
        [0.1, 0.1 * 0.01**0.25, 0.01, 0.1 * 0.01**0.75, 0.001, 0.001]
    )
    few = np.zeros(100, dtype=np.float32)
    few[3] = 1.0
    assert np.array_equal(TopK(0.5).filter(few, step=0), few)  # fewer non-zeros than k: all pass
    level = TopK(0.01, warmup_steps=4, start_density=0.01)  # a warm-up may start at the density itself
    assert [level.density_at(s) for s in range(5)] == [0.01] * 5


# -------------------------------------------------------------- error feedback
@pytest.mark.parametrize("spec", ["topk:0.05", "sign", "qsgd:2", "topk:0.1+sign"])
def test_sent_plus_residual_is_the_update_plus_the_previous_residual(spec):
    codec = make_codec(spec)
    residual = None
    for step in range(5):
        update = [torch.from_numpy(np.roll(VALUES, step)[:2000].copy()), torch.randn(30)]
        previous = residual or [torch.zeros_like(u) for u in update]
        payload, residual = send_with_feedback(codec, update, residual, [None, None], step=step, seed=step)
        sent = codec.decode(payload, [2000, 30])
        for s, r, u, p in zip(sent, residual, update, previous, strict=True):
            assert torch.allclose(s + r, u + p, atol=1e-6 * float((u + p).abs().max()))


def test_error_feedback_never_sends_nor_keeps_a_pruned_coordinate():
    codec = make_codec("topk:0.05+qsgd:4")
    generator = torch.Generator().manual_seed(0)
    residual = None
    for step in range(8):
        keep = torch.rand(1000, generator=generator) < 0.5  # the mask changes from step to step
        update = [torch.randn(1000, generator=generator) * keep]
        payload, residual = send_with_feedback(codec, update, residual, [keep], step=step, seed=step)
        sent = codec.decode(payload, [1000])[0]
        assert not sent[~keep].any() and not residual[0][~keep].any()
        assert residual[0][keep].any()  # what top-k dropped where kept is carried


def test_momentum_correction_accumulates_the_device_s_momentum_and_clears_it_where_sent():
    """DGC: u = m u + g; e + u is what top-k sees; u restarts where something was sent."""
    codec, momentum = make_codec("topk:0.1"), 0.9
    generator = torch.Generator().manual_seed(1)
    residual = velocity = None
    keep = torch.rand(500, generator=generator) < 0.7
    for step in range(6):
        update = [torch.randn(500, generator=generator) * keep]
        before_e = residual[0] if residual else torch.zeros(500)
        before_u = velocity[0] if velocity else torch.zeros(500)
        payload, residual, velocity = send_with_momentum_correction(
            codec, update, residual, velocity, [keep], momentum, step=step, seed=step
        )
        sent = codec.decode(payload, [500])[0]
        accumulated = momentum * before_u + update[0]
        assert torch.allclose(sent + residual[0], before_e + accumulated, atol=1e-5)
        assert not velocity[0][sent != 0].any()
        assert torch.allclose(velocity[0][sent == 0], accumulated[sent == 0])
        assert not (sent[~keep].any() or residual[0][~keep].any() or velocity[0][~keep].any())


def test_the_download_residual_waits_where_nobody_sends_and_is_added_where_somebody_does():
    codec = make_codec("topk:0.5")
    first = [torch.tensor([4.0, 1.0, 0.0, 3.0])]
    payload, residual = send_downlink_with_feedback(codec, first, None, step=0, seed=0)
    assert codec.decode(payload, [4])[0].tolist() == [4.0, 0.0, 0.0, 3.0] and residual[0].tolist() == [
        0,
        1,
        0,
        0,
    ]
    second = [torch.tensor([0.0, 0.0, 2.0, 0.5])]  # coordinate 1 sent by nobody now
    payload, residual = send_downlink_with_feedback(codec, second, residual, step=1, seed=0)
    assert codec.decode(payload, [4])[0].tolist() == [0.0, 0.0, 2.0, 0.5] and residual[0].tolist() == [
        0,
        1,
        0,
        0,
    ]


# -------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    "spec, message",
    [
        ("qsgd:3", r"^codec 'qsgd:3': qsgd bits must be one of 2, 4, 8, got 3$"),
        ("qsgd:8:0", r"^codec 'qsgd:8:0': qsgd block must be an integer >= 1"),
        ("sign:0", r"^codec 'sign:0': sign block must be an integer >= 1 \(values per scale\), got 0$"),
        ("topk:0", r"^codec 'topk:0': topk density must be in \(0, 1\], got 0.0$"),
        ("topk:1.5", r"^codec 'topk:1.5': topk density must be in \(0, 1\], got 1.5$"),
        ("topk:x", r"^codec 'topk:x': 'topk:x' has a value that is not a number$"),
        ("gzip", r"^codec 'gzip': unknown stage 'gzip'; stages are topk:DENSITY"),
        ("qsgd:8+sign", r"^codec 'qsgd:8\+sign': give at most one value coder, got qsgd:8, sign$"),
        ("fp16+topk:0.1", r"^codec 'fp16\+topk:0.1': filters \(topk\) come before the value coder$"),
    ],
)
def test_a_bad_codec_spec_is_a_one_line_error_naming_it(spec, message):
    with pytest.raises(ValueError, match=message):
        make_codec(spec)


def test_a_user_codec_is_one_small_interface_and_an_old_style_one_is_named():
    class Halves(Codec):  # a user's own codec: float16 values of every entry
        lossy = True

        def encode(self, tensors, *, step=0, seed=0):
            data = b"".join(t.to(torch.float16).numpy().tobytes() for t in tensors)
            return Payload(data)

        def decode(self, payload, numels):
            flat = torch.frombuffer(bytearray(payload.data), dtype=torch.float16).float()
            return list(flat.split(numels))

    strategy = FederatedStrategy(codec=Halves(), error_feedback=True)
    payload, residual = send_with_feedback(
        strategy.codec, [torch.tensor([1.0, 1e-4])], None, [None], step=0, seed=0
    )
    assert len(payload) == 4 and residual[0].abs().max() < 1e-6

    class OldStyle(Halves):
        def encode(self, tensors):
            return super().encode(tensors)

    with pytest.raises(ValueError, match=r"^codec: OldStyle.encode must take the keywords step and seed"):
        FederatedStrategy(codec=OldStyle())


def test_error_feedback_of_a_codec_that_drops_nothing_is_an_error_naming_the_option():
    with pytest.raises(
        ValueError, match=r"^error_feedback needs a lossy codec .*SparseCodec\(float32\) drops"
    ):
        FederatedStrategy(error_feedback=True)
    with pytest.raises(ValueError, match=r"^download_error_feedback needs a lossy codec"):
        FederatedStrategy(codec="qsgd:8", download_codec="float32", download_error_feedback=True)
    with pytest.raises(ValueError, match=r"^error_feedback_momentum is DGC's momentum correction: it needs"):
        FederatedStrategy(codec="topk:0.1", error_feedback_momentum=0.9)
    with pytest.raises(ValueError, match=r"^error_feedback_momentum must be in \[0, 1\), got 1.0"):
        FederatedStrategy(codec="topk:0.1", error_feedback=True, error_feedback_momentum=1.0)
    with pytest.raises(ValueError, match=r"^download_codec 'qsgd:5': qsgd bits"):
        FederatedStrategy(download_codec="qsgd:5")


# ------------------------------------------------------------ in the strategy
def _fit(data_dir, root, max_steps=6, resume=None, every=None, **strategy_options):
    def network():
        return variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)))

    return small_fit(data_dir, root, network, FederatedStrategy(**strategy_options), max_steps, resume, every)


STACK = {
    "codec": "topk:0.05+qsgd:8", "error_feedback": True,
    "download_codec": "qsgd:8", "download_error_feedback": True,
}  # fmt: skip


def test_the_default_download_is_the_upload_s_values_without_its_topk():
    assert repr(FederatedStrategy(codec="topk:0.01:5+qsgd:4").download_codec) == "SparseCodec(qsgd:4)"
    assert repr(FederatedStrategy(codec="sign").download_codec) == "SparseCodec(sign)"
    assert (
        repr(FederatedStrategy(codec="topk:0.1", download_codec="fp16").download_codec) == "SparseCodec(fp16)"
    )


def test_a_compressed_run_sends_fewer_bytes_and_keeps_residuals_on_both_sides(data_dir, tmp_path):
    _, plain = _fit(data_dir, tmp_path / "plain")
    module, packed = _fit(data_dir, tmp_path / "packed", **STACK)
    plain_total, packed_total = plain.ledger.total, packed.ledger.total
    assert packed_total.upload_bytes < plain_total.upload_bytes / 8  # 5 % of entries, a byte each
    assert packed_total.download_bytes < plain_total.download_bytes / 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    residuals = [packed.devices.row(d)[1]["residual"] for d in range(4)]
    assert all(len(r) == len(packed.plan.shared) and any(t.any() for t in r) for r in residuals)
    assert packed.compression.server_residual is not None
    assert any(t.any() for t in packed.compression.server_residual)


def test_a_resumed_compressed_run_ends_as_the_run_that_never_stopped(data_dir, tmp_path):
    """Residuals (devices' and the server's) and the seeded roundings survive a checkpoint exactly."""
    whole, whole_strategy = _fit(data_dir, tmp_path / "whole", max_steps=6, **STACK)
    ckpt = tmp_path / "half" / "checkpoints" / "last.ckpt"
    _fit(data_dir, tmp_path / "half", max_steps=3, every=3, **STACK)  # mid-epoch: 10 steps an epoch
    resumed, resumed_strategy = _fit(data_dir, tmp_path / "resumed", max_steps=6, resume=str(ckpt), **STACK)
    first, second = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    for device in range(4):
        for a, b in zip(
            whole_strategy.devices.row(device)[1]["residual"],
            resumed_strategy.devices.row(device)[1]["residual"],
            strict=True,
        ):
            assert torch.equal(a, b)
    ledger = [vars(t) for t in whole_strategy.ledger.history]
    assert ledger == [vars(t) for t in resumed_strategy.ledger.history]


def test_dgc_with_momentum_correction_and_server_sgd_trains_and_keeps_velocities(data_dir, tmp_path):
    options = {"codec": "topk:0.01:3", "error_feedback": True, "error_feedback_momentum": 0.9}
    module, strategy = _fit(
        data_dir, tmp_path, max_steps=4, server_optimizer="fedavg", server_lr=0.1, **options
    )
    assert all(torch.isfinite(p).all() for p in module.parameters())
    velocities = [strategy.devices.row(d)[1]["velocity"] for d in range(4)]
    assert all(len(v) == len(strategy.plan.shared) and any(t.any() for t in v) for v in velocities)


def test_sampled_rounds_with_a_lossy_download_step_the_server_s_exact_model(data_dir, tmp_path):
    """Devices start from the quantised model, the server steps its own: FedAvg of deltas."""
    options = {"devices_per_round": 2, "local_steps": 2, "codec": "topk:0.2+qsgd:8", "error_feedback": True}
    _, lossless = _fit(data_dir, tmp_path / "c", max_steps=3, **options)
    assert repr(lossless.download_codec) == "SparseCodec(float32)"  # by default the model goes whole
    module, strategy = _fit(data_dir, tmp_path / "a", max_steps=3, download_codec="qsgd:8", **options)
    # a byte a value and a scale per tensor, against four bytes a value
    assert strategy.ledger.total.download_bytes < 0.26 * lossless.ledger.total.download_bytes
    assert strategy.algorithm._server_model is None and all(
        torch.isfinite(p).all() for p in module.parameters()
    )
    sent = [strategy.devices.row(d)[1].get("residual") for d in range(4)]
    assert any(r is not None for r in sent)  # the sampled devices hold residuals, the others none yet
    with pytest.raises(ValueError, match=r"^download_error_feedback applies to the paper's protocol"):
        _fit(
            data_dir,
            tmp_path / "b",
            max_steps=1,
            download_codec="qsgd:8",
            download_error_feedback=True,
            **options,
        )


def _feedback_of(strategy, device: int) -> list[torch.Tensor] | None:
    """A device's residual, wherever its store keeps it (memory, or its row on disk)."""
    return strategy.devices.row(device)[1].get("residual")


def test_residuals_in_the_devices_rows_on_disk_train_and_resume_as_in_memory(data_dir, tmp_path):
    """At 1,000 devices the residuals go where the variant's log_sigma2 goes: the rows file."""
    options = {"devices_per_round": 2, "local_steps": 2, "codec": "topk:0.1+qsgd:4", "error_feedback": True}
    memory, in_memory = _fit(data_dir, tmp_path / "memory", max_steps=6, device_store="memory", **options)
    _fit(data_dir, tmp_path / "half", max_steps=3, every=3, device_store="disk", **options)
    resume = str(tmp_path / "half" / "checkpoints" / "last.ckpt")
    disk, on_disk = _fit(
        data_dir, tmp_path / "disk", max_steps=6, resume=resume, device_store="disk", **options
    )
    assert on_disk.devices.on_disk and not in_memory.devices.on_disk
    assert not any(on_disk.devices.states[d].stages for d in range(4))  # not in memory between rounds
    first, second = memory.state_dict(), disk.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    trained = 0
    for device in range(4):
        a, b = _feedback_of(in_memory, device), _feedback_of(on_disk, device)
        assert (a is None) == (b is None)
        if a is not None:
            trained += 1
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert trained >= 2


def test_compression_keeps_the_device_residual_in_its_state_and_sampled_rounds_download_the_model():
    compression = Compression("topk:0.5", error_feedback=True)
    extra, update = {}, [torch.tensor([1.0, -4.0, 2.0, 0.5])]
    payload = compression.encode_upload(update, extra, [None], step=0, seed=(0, UPLOAD, 0, 0))
    sent = compression.codec.decode(payload, [4])[0]
    assert torch.equal(sent + extra["residual"][0], update[0])  # nothing lost, only delayed
    assert compression.feedback_kinds == ("residual",)
    compression.for_sampled_rounds()
    assert repr(compression.download_codec) == "SparseCodec(float32)"  # the model, losslessly
    with pytest.raises(ValueError, match=r"^download_error_feedback applies to the paper's protocol"):
        Compression("qsgd:8", download_error_feedback=True).for_sampled_rounds()


# ------------------------------------------------------- through the strategy, as a run uses them
def _spy(monkeypatch, name: str) -> list[dict]:
    """Every call of ``Compression.<name>`` in a run: its arguments, step, seed and payload."""
    calls, original = [], getattr(Compression, name)

    def spy(self, *args, **kwargs):
        payload = original(self, *args, **kwargs)
        calls.append({"args": args, "step": kwargs["step"], "seed": kwargs["seed"], "payload": payload})
        return payload

    monkeypatch.setattr(Compression, name, spy)
    return calls


def test_the_paper_s_ledger_is_the_payloads_both_ways_and_the_download_reaches_every_device(
    data_dir, tmp_path, monkeypatch
):
    """Per step: upload bytes and values are the sum over the 4 devices' payloads, download bytes and
    values 4 times the server's one payload (every device receives it), nothing else counted."""
    uploads, downloads = _spy(monkeypatch, "encode_upload"), _spy(monkeypatch, "encode_download")
    _, strategy = _fit(data_dir, tmp_path, max_steps=3, codec="qsgd:8")
    history = strategy.ledger.history
    assert len(history) == 3 and len(uploads) == 12 and len(downloads) == 3
    for step, traffic in enumerate(history):
        sent = [c["payload"] for c in uploads if c["step"] == step]
        (back,) = [c["payload"] for c in downloads if c["step"] == step]
        assert len(sent) == 4
        assert traffic.upload_bytes == sum(len(p) for p in sent)
        numels = strategy.plan.numels
        assert traffic.upload == sum(strategy.codec.read(p, numels)[1] for p in sent)
        back_values = strategy.download_codec.read(back, numels)[1]
        assert (traffic.download_bytes, traffic.download) == (4 * len(back), 4 * back_values)
        assert traffic.sampled == traffic.reported == 4


def test_error_feedback_in_a_run_gets_each_device_s_m_alpha_and_keeps_nothing_it_prunes(
    data_dir, tmp_path, monkeypatch
):
    """The strategy hands the upload's error feedback the hosted device's own M(alpha), as it was
    when the device computed its update: the residual it keeps is zero wherever that mask prunes,
    so a pruned weight is never sent later."""
    seen, at_update = [], []

    def masks_now(module):
        return {name: layer.keep_mask().reshape(-1).clone() for name, layer in module.named_modules()
                if hasattr(layer, "keep_mask")}  # fmt: skip

    original, original_gradients = Compression.encode_upload, SharingPlan.gradients

    def record(self, update, extra, keeps, *, step, seed, **more):
        payload = original(self, update, extra, keeps, step=step, seed=seed, **more)
        seen.append((at_update.pop(), keeps, list(extra["residual"])))
        return payload

    def update_of(self, model):  # the device's masks as it computes its update
        at_update.append(masks_now(model))
        return original_gradients(self, model)

    monkeypatch.setattr(SharingPlan, "gradients", update_of)

    monkeypatch.setattr(Compression, "encode_upload", record)
    _, strategy = _fit(data_dir, tmp_path, max_steps=4, codec="topk:0.05", error_feedback=True)
    assert len(seen) == 16  # 4 devices, 4 rounds
    shared = strategy.plan.shared
    pruned = 0
    for truth, keeps, residual in seen:
        for tensor, keep, value in zip(shared, keeps, residual, strict=True):
            if tensor.mask_of is None:
                assert keep is None
                continue
            assert keep is not None and torch.equal(keep, truth[tensor.mask_of]), tensor.name
            assert not value[~keep].any(), tensor.name  # nothing kept to send later where it prunes
            pruned += int((~keep).sum())
    assert pruned > 0  # the masks did prune: the checks above had something to check


def test_weighted_aggregation_is_the_shard_size_weighted_mean_of_the_decoded_uploads(
    data_dir, tmp_path, monkeypatch
):
    """aggregation='weighted' through the strategy, against a hand computation: per step, the average
    the server encodes is sum_d n_d u_d / sum_d n_d over the devices' decoded uploads u_d and shard
    sizes n_d (unequal here), not their plain mean."""
    import pytorch_lightning as pl

    from datamodules import FederatedDataModule
    from modules.classifier import SparseVDClassifier
    from tests.conftest import N_TRAIN

    uploads, downloads = _spy(monkeypatch, "encode_upload"), _spy(monkeypatch, "encode_download")
    pl.seed_everything(3, verbose=False)
    dm = FederatedDataModule(
        "mnist", 4, "iid", {"unequal_sigma": 0.8}, batch_size=16, data_dir=data_dir, val_size=64
    )
    network = variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    strategy = FederatedStrategy(aggregation="weighted")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, max_steps=2, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(SparseVDClassifier(network, num_train=N_TRAIN), dm)
    sizes = dm.device_sizes()
    assert len(set(sizes)) == 4  # the weights differ: a plain mean would not pass
    for step in range(2):
        decoded = {
            c["seed"][2]: strategy.codec.decode(c["payload"], strategy.plan.numels)
            for c in uploads
            if c["step"] == step
        }
        (average,) = [c["args"][0] for c in downloads if c["step"] == step]
        assert sorted(decoded) == [0, 1, 2, 3]
        for i, got in enumerate(average):
            expected = sum(sizes[d] * decoded[d][i] for d in range(4)) / sum(sizes)
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-8), (step, i)
