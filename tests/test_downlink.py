"""The download of FedAvg rounds as the model's change: sparse where nothing moved, exact resume."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_fed import FederatedStrategy
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.downlink import ModelDownlink
from lightning_fed.federation.saving import FederatedCheckpointing
from lightning_fed.nn import variational
from tests.helpers.small_fit import small_fit

NUMEL = 1000


def _models(rounds: int, changed: int):
    """A model of NUMEL weights, then ``rounds`` steps that each move only the first ``changed``."""
    generator = torch.Generator().manual_seed(0)
    model = torch.randn(NUMEL, generator=generator)
    yield model.clone()
    for _ in range(rounds):
        model[:changed] += 0.01 * torch.randn(changed, generator=generator)
        yield model.clone()


class Devices:
    """The devices' end of a download: what they read of each payload, and the values it carried."""

    def __init__(self):
        self.payloads, self.values = [], []

    def __call__(self, payload, codec):
        tensors, values = codec.read(payload, [NUMEL])
        self.payloads.append(payload)
        self.values.append(values)
        return tensors


def test_a_lossless_delta_sends_only_what_moved_and_the_devices_hold_the_model():
    downlink, compression, devices = ModelDownlink("delta"), Compression(), Devices()
    for step, model in enumerate(_models(rounds=10, changed=100)):
        held = downlink.send([model], compression, devices, step=step, seed=0)
        assert devices.values[-1] == (NUMEL if step == 0 else 100)
        # a round adds the change once: two roundings (of the change, of the sum) of numbers below
        # 4, each at most half an ulp (2**-23), over 10 rounds
        assert torch.allclose(held[0], model, rtol=0, atol=10 * 2 * 2**-23)


def test_a_quantised_delta_with_the_server_s_residual_keeps_held_plus_residual_equal_to_the_model():
    compression = Compression(download_codec="qsgd:8", download_error_feedback=True)
    downlink, devices = ModelDownlink("delta"), Devices()
    for step, model in enumerate(_models(rounds=20, changed=300)):
        held = downlink.send([model], compression, devices, step=step, seed=(0, step))
        if step:
            decoded = compression.download_codec.decode(devices.payloads[-1], [NUMEL])[0]
            assert not decoded[300:].any()  # a weight nobody moved is never sent
            residual = compression.server_residual[0]
            # ~100 float32 roundings (into held, model, residual) of numbers below 4, each under 2**-22
            assert torch.allclose(held[0] + residual, model, rtol=0, atol=100 * 2**-22)
            # within one level (scale / 127) of a round's message; its scale, the largest change
            # (0.01 x a normal draw, of 300) plus residual, is under 0.05
            assert residual.abs().max() < 0.05 / 127
    assert devices.values[-1] == 300


def _fit(data_dir, root, max_steps=6, resume=None, every=None, **strategy_options):
    def network():
        net = variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)))
        with torch.no_grad():
            net[1].log_sigma2.fill_(10.0)  # log alpha >> 3: M(alpha) prunes the whole first layer
        return net

    return small_fit(data_dir, root, network, FederatedStrategy(**strategy_options), max_steps, resume, every)


FEDAVG = {"local_steps": 2, "codec": "qsgd:8", "error_feedback": True}
DELTA = {**FEDAVG, "download": "delta", "download_codec": "qsgd:8", "download_error_feedback": True}


def test_a_pruned_layer_costs_nothing_on_the_way_back_and_a_resume_is_exact(data_dir, tmp_path):
    _, model = _fit(data_dir, tmp_path / "model", download_codec="qsgd:8", **FEDAVG)
    whole, delta = _fit(data_dir, tmp_path / "whole", **DELTA)
    first, later = delta.ledger.history[0].download_bytes, delta.ledger.history[-1].download_bytes
    assert first > 3 * model.ledger.history[0].download_bytes  # the exact model: 4 bytes a weight, not 1
    # the first layer (784 x 32 of 25,450 weights) never moves: later rounds send the rest only
    assert later < 0.1 * model.ledger.history[-1].download_bytes
    ckpt = tmp_path / "half" / "checkpoints" / "last.ckpt"
    _fit(data_dir, tmp_path / "half", max_steps=3, every=3, **DELTA)
    resumed, resumed_strategy = _fit(data_dir, tmp_path / "resumed", resume=str(ckpt), **DELTA)
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [vars(t) for t in delta.ledger.history] == [vars(t) for t in resumed_strategy.ledger.history]
    held = zip(delta.downlink.held, resumed_strategy.downlink.held, strict=True)
    assert all(torch.equal(x, y) for x, y in held)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"devices_per_round": 2, "local_steps": 2}, r"^download='delta' needs every device in every round"),
        ({}, r"^download='delta' applies to FedAvg rounds"),
        ({"local_steps": 2, "download_codec": "qsgd:8"}, r"^download='delta' with the lossy download codec"),
        ({"download": "both"}, r"^download must be one of model, delta, got 'both'"),
    ],
)
def test_a_download_delta_that_cannot_work_is_a_one_line_error(data_dir, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        _fit(data_dir, tmp_path, max_steps=1, **{"download": "delta", **options})


def test_a_lossy_upload_codec_alone_leaves_the_delta_lossless(data_dir, tmp_path):
    """Without a download codec, FedAvg rounds download float32: the delta needs no residual then."""
    _, strategy = _fit(data_dir, tmp_path, max_steps=2, download="delta", **FEDAVG)
    assert repr(strategy.download_codec) == "SparseCodec(float32)"
    assert strategy.compression.server_residual is None and strategy.downlink.held is not None


def test_a_resumed_server_state_moves_to_the_model_s_device():
    """A checkpoint is read onto the CPU; the downlink's copies and the server's residual must
    follow the model to its device, else the first change sent after a resume on a GPU mixes cuda
    and cpu tensors (an H200 run, 2026-12-04). The meta device stands in for the GPU."""
    downlink, compression = ModelDownlink("delta"), Compression()
    saved = {"download": "delta", "sent": [torch.ones(3)], "held": [torch.ones(3)]}
    compression.server_residual = [torch.zeros(3)]  # as load_checkpoint sets it, on the CPU
    resuming = SimpleNamespace(
        _resumed={}, _resumed_from=("last.ckpt", 0, None), _saved_trajectory={}, trajectory=dict,
        devices=SimpleNamespace(load_state_dict=lambda *args, **kwargs: None),
        algorithm=SimpleNamespace(load_state_dict=lambda state: downlink.load_state_dict(state["downlink"])),
        _algorithm_state={"downlink": saved}, compression=compression, _server_aggregation_state=None,
        server_aggregation=SimpleNamespace(load_state_dict=lambda state: None),
        root_device=torch.device("meta"),
    )  # fmt: skip
    FederatedCheckpointing.restore_devices(resuming)
    moved = [*downlink.sent, *downlink.held, *compression.server_residual]
    assert [t.device.type for t in moved] == ["meta"] * 3
