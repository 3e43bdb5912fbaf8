"""The download of FedAvg rounds as the model's change: sparse where nothing moved, exact resume."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_fed import FederatedStrategy
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.downlink import (
    HELD,
    ModelDownlink,
    pruned_log_sigma2,
    send_change,
    unsent_pairs,
)
from lightning_fed.federation.saving import FederatedCheckpointing
from lightning_fed.federation.sharing import SharingPlan
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


def _network():
    net = variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)))
    with torch.no_grad():
        net[1].log_sigma2.fill_(10.0)  # log alpha >> 3: M(alpha) prunes the whole first layer
    return net


def _fit(data_dir, root, max_steps=6, resume=None, every=None, **strategy_options):
    strategy = FederatedStrategy(**strategy_options)
    return small_fit(data_dir, root, _network, strategy, max_steps, resume, every)


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
        (
            {
                "devices_per_round": 2,
                "local_steps": 2,
                "download_codec": "qsgd:8",
                "download_error_feedback": True,
            },
            r"^download='delta' in sampled rounds sends each device the change from the copy it holds",
        ),
        ({}, r"^download='delta' applies to FedAvg rounds"),
        ({"local_steps": 2, "download_codec": "qsgd:8"}, r"^download='delta' with the lossy download codec"),
        ({"download": "both"}, r"^download must be one of model, delta, sparse, got 'both'"),
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
        _resumed={}, _resumed_from=("last.ckpt", 0, None), _resumed_initial=None, _saved_trajectory={},
        trajectory=dict, held_devices=[],
        devices=SimpleNamespace(load_state_dict=lambda *args, **kwargs: None),
        algorithm=SimpleNamespace(load_state_dict=lambda state: downlink.load_state_dict(state["downlink"])),
        _algorithm_state={"downlink": saved}, compression=compression, _server_aggregation_state=None,
        server_aggregation=SimpleNamespace(load_state_dict=lambda state: None),
        root_device=torch.device("meta"),
    )  # fmt: skip
    FederatedCheckpointing.restore_devices(resuming)
    moved = [*downlink.sent, *downlink.held, *compression.server_residual]
    assert [t.device.type for t in moved] == ["meta"] * 3


def _alg1_model(pruned_rows: int = 3):
    """A variational 6 -> 4 -> 2 model whose first layer has its first ``pruned_rows`` rows pruned."""
    torch.manual_seed(0)
    model = variational(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)))
    with torch.no_grad():
        model[0].log_sigma2[:pruned_rows] = 5.0  # log alpha > 3 for weights of norm under 1
        model[0].weight[:pruned_rows] = torch.rand(pruned_rows, 6) * 0.5 + 0.1  # non-zero, pruned
    return model


def _sparse_download(model):
    plan = SharingPlan(model, share_log_sigma2=True)
    compression = Compression()
    compression.for_sampled_rounds("sparse")
    downlink = ModelDownlink("sparse")
    downlink.pairs = unsent_pairs(plan, model)
    carried = []

    def deliver(payload, codec):
        tensors, values = codec.read(payload, [t.numel for t in plan.shared])
        carried.append((len(payload), values))
        return tensors

    keeps = plan.keeps(plan.masks(model))
    held = downlink.send(plan.values(model), compression, deliver, step=0, seed=0, keeps=keeps)
    return plan, held, carried[0]


def test_a_sparse_download_carries_the_kept_weights_and_the_device_holds_the_rest_pruned():
    model = _alg1_model()
    plan, held, (size, values) = _sparse_download(model)
    kept = int(model[0].keep_mask().sum()) + int(model[2].keep_mask().sum())
    assert kept == 4 * 6 - 3 * 6 + 8  # the pruned rows are all the first layer prunes
    assert values == 2 * kept + 4 + 2  # theta and log_sigma2 where kept, the biases whole
    device = _alg1_model()
    plan.write_parameters(device, held)
    for server_layer, device_layer in ((model[0], device[0]), (model[2], device[2])):
        assert torch.equal(device_layer.keep_mask(), server_layer.keep_mask())  # the public M(alpha)
        masked = device_layer.weight * device_layer.keep_mask()
        assert torch.equal(masked, server_layer.weight * server_layer.keep_mask())
    assert not device[0].weight[:3].any()  # held pruned: theta 0 ...
    assert torch.equal(device[0].log_sigma2[:3], torch.full((3, 6), pruned_log_sigma2(3.0)))  # ... quiet
    x = torch.randn(5, 6)
    model.eval(), device.eval()
    assert torch.equal(device(x), model(x))  # the device evaluates the server's model exactly


def test_with_nothing_pruned_the_sparse_download_is_the_model_itself():
    model = _alg1_model(pruned_rows=0)
    plan, held, (size, values) = _sparse_download(model)
    assert values == sum(t.numel for t in plan.shared)
    assert all(torch.equal(h, v) for h, v in zip(held, plan.values(model), strict=True))


SPARSE = {"devices_per_round": 2, "local_steps": 2, "share_log_sigma2": True}


def test_a_sparse_download_is_cheaper_and_the_server_s_pruned_weights_stay_frozen(data_dir, tmp_path):
    """The whole first layer is pruned (log_sigma2 10): under the paper's masking and the FedAvg
    server step no update reaches it, so the server's copy never moves, and it is never sent."""
    _, whole = _fit(data_dir, tmp_path / "model", **SPARSE)
    module, sparse = _fit(data_dir, tmp_path / "sparse", download="sparse", **SPARSE)
    torch.manual_seed(0)  # as small_fit builds the network
    initial, trained = _network(), module.network
    assert torch.equal(trained[1].weight, initial[1].weight)
    assert torch.equal(trained[1].log_sigma2, initial[1].log_sigma2)
    assert not torch.equal(trained[3].weight, initial[3].weight)  # the kept layer trained
    # 784 x 32 theta and log_sigma2 unsent: what is left is the second layer's two tensors of 320
    # floats and the biases (42), under 3 KB to each of the round's two devices, against 200 KB
    sparse_bytes = [r.download_bytes for r in sparse.ledger.history]
    assert max(sparse_bytes) < 2 * 3000 < 0.03 * min(r.download_bytes for r in whole.ledger.history)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"share_log_sigma2": False}, r"^download='sparse' needs share_log_sigma2=True \(Algorithm 1\)"),
        ({"devices_per_round": None, "local_steps": 1}, r"^download='sparse' applies to FedAvg rounds"),
    ],
)
def test_a_sparse_download_that_cannot_work_is_a_one_line_error(data_dir, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        _fit(data_dir, tmp_path, max_steps=1, **{**SPARSE, "download": "sparse", **options})


def test_a_sparse_download_of_a_dense_model_is_refused():
    from lightning_fed.federation.config import FederationConfig
    from lightning_fed.federation.fedavg import FedAvg

    dense = nn.Linear(3, 2)
    host = SimpleNamespace(
        config=FederationConfig(num_devices=4, download="sparse", **SPARSE), compression=Compression(),
        num_devices=4, plan=SharingPlan(dense, share_log_sigma2=True), lightning_module=dense,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"^download='sparse' needs a sparse variational model"):
        FedAvg().setup(host)


def test_a_device_s_own_copy_takes_the_change_so_a_lossy_codec_s_error_never_accumulates():
    """Sampled rounds: each send is the change from what the device holds, so after it the copy is
    within one quantisation level of that round's model, whatever the earlier rounds dropped."""
    compression, devices = Compression(download_codec="qsgd:8"), Devices()
    held, errors = None, []
    for step, model in enumerate(_models(rounds=30, changed=NUMEL)):
        before = torch.zeros(NUMEL) if held is None else held[0].clone()
        held = send_change([model], held, compression, devices, step=step, seed=(0, step))
        # 8-bit QSGD rounds each value to a level of max|change| / 127 (stochastically: the level
        # below or above), so a value is off by less than one level, plus float32 rounding
        level = (model - before).abs().max() / 127
        errors.append((held[0] - model).abs().max().item())
        assert errors[-1] <= level + 1e-6
    assert max(errors[1:]) < 0.05 * errors[0]  # the changes (0.01 x normal) are finer than the model (normal)


SAMPLED = {"devices_per_round": 2, "local_steps": 2, "download": "delta"}


def test_in_sampled_rounds_each_device_downloads_the_change_from_its_own_copy(data_dir, tmp_path):
    whole, model_run = _fit(data_dir, tmp_path / "model", devices_per_round=2, local_steps=2)
    delta, delta_run = _fit(data_dir, tmp_path / "delta", **SAMPLED)
    first, rest = delta_run.ledger.history[0], delta_run.ledger.history[1:]
    # a device's first download, the change from zeros, is the model itself: the same bytes
    assert first.download_bytes == model_run.ledger.history[0].download_bytes
    # the pruned first layer (25,088 of 25,450 weights) never moves: a returning device gets the rest
    returning = [
        t.download_bytes
        for t, m in zip(rest, model_run.ledger.history[1:])
        if t.download_bytes < m.download_bytes
    ]
    assert returning and sum(t.download_bytes for t in rest) < sum(
        m.download_bytes for m in model_run.ledger.history[1:]
    )
    # lossless: each start is the model up to float32 rounding of held + change (an ulp of numbers
    # below 4, 2**-22, per round a device took part in), so the runs end alike
    a, b = whole.state_dict(), delta.state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)
    copies = {d: delta_run.devices.row(d)[1].get(HELD) for d in range(4)}
    assert all(copy is not None and len(copy) == len(delta_run.plan.numels) for copy in copies.values())


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_a_resume_of_sampled_delta_downloads_is_exact(data_dir, tmp_path, store):
    options = {**SAMPLED, "download_codec": "qsgd:8", "device_store": store}
    whole, strategy = _fit(data_dir, tmp_path / "whole", **options)
    _fit(data_dir, tmp_path / "half", max_steps=3, every=3, **options)
    ckpt = tmp_path / "half" / "checkpoints" / "last.ckpt"
    resumed, resumed_strategy = _fit(data_dir, tmp_path / "resumed", resume=str(ckpt), **options)
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [vars(t) for t in strategy.ledger.history] == [vars(t) for t in resumed_strategy.ledger.history]
    for device in range(4):
        mine, theirs = strategy.devices.row(device)[1][HELD], resumed_strategy.devices.row(device)[1][HELD]
        assert all(torch.equal(x, y) for x, y in zip(mine, theirs, strict=True))


@pytest.mark.slow
def test_devices_own_downloads_are_counted_alike_in_one_process_and_in_two(tmp_path):
    """Across processes a device's own message is read by its host alone; the processes add up."""
    import json

    from tests.test_fit_cli import fit

    histories = []
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        result = fit(
            "--devices", "4", "--devices-per-round", "2", "--local-steps", "2", "--processes", str(processes),
            "--dataset", "mnist-5k", "--network", "lenet300_100", "--max-rounds", "4", "--max-epochs", "1",
            "--download-delta", "--download-codec", "qsgd:8", "--wandb-mode", "disabled",
            "--output-dir", str(out), cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        history = json.loads((out / "ledger.json").read_text())["history"]
        keys = ("download", "download_bytes", "upload", "upload_bytes")
        histories.append([{k: h[k] for k in keys} for h in history])
    assert histories[0] == histories[1] and all(h["download"] > 0 for h in histories[1])
