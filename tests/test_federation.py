"""The federation's pure pieces: what is shared and masked, device state, aggregation, hosting."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lightning_fed.communication import CommunicationLedger, SparseCodec
from lightning_fed.federation import (
    DeviceStates,
    InProcess,
    SharingPlan,
    check_processes,
    hosted_devices,
)
from lightning_fed.federation.health import DeviceFailed
from lightning_fed.federation.messages import AVERAGE, SERVER, UPDATE, Message
from lightning_fed.federation.stages import MaskByAlpha, Sending, Way
from lightning_fed.nn import variational


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return variational(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3)))


def test_the_plan_shares_theta_masked_keeps_log_sigma2_and_buffers_local():
    plan = SharingPlan(small_model())
    shared = {t.name: t.mask_of for t in plan.shared}
    assert shared == {
        "0.weight": "0",
        "0.bias": None,
        "1.weight": None,
        "1.bias": None,
        "3.weight": "3",
        "3.bias": None,
    }
    assert plan.local_parameters == ["0.log_sigma2", "3.log_sigma2"]
    assert plan.local_buffers == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    algorithm_1 = SharingPlan(small_model(), share_log_sigma2=True)
    assert algorithm_1.local_parameters == []
    log_sigma2 = {
        t.name: (t.mask_of, t.in_dense_baseline) for t in algorithm_1.shared if "log_sigma2" in t.name
    }
    assert log_sigma2 == {"0.log_sigma2": ("0", False), "3.log_sigma2": ("3", False)}
    assert algorithm_1.dense_numel == plan.dense_numel == sum(t.numel for t in plan.shared)


def test_the_upload_is_masked_by_m_alpha_even_for_a_deep_copy_of_the_model():
    model = small_model()
    with torch.no_grad():
        model[3].log_sigma2[0].fill_(5.0)  # log_alpha >= 3 for every weight of output 0
    for candidate in (model, copy.deepcopy(model)):
        candidate.zero_grad()
        candidate(torch.randn(4, 1, 4, 4)).sum().backward()
        plan = SharingPlan(candidate)
        sending = Sending({}, step=0, seed=0, keeps=plan.keeps(plan.masks(candidate)))
        sent = Way([MaskByAlpha()], SparseCodec()).send(plan.gradients(candidate), sending)
        upload = dict(zip([t.name for t in plan.shared], sent.decoded(), strict=True))
        grad = candidate[3].weight.grad
        assert torch.all(upload["3.weight"].view(3, 8)[0] == 0) and torch.all(grad[0] != 0)
        assert torch.equal(upload["3.weight"].view(3, 8)[1:], grad[1:])


def test_device_states_swap_parameters_buffers_optimizer_state_and_random_streams():
    model = small_model()
    plan = SharingPlan(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    states = DeviceStates(model, plan, devices=[0, 1], seed=7, optimizer=optimizer)
    draws = {}
    for device in (0, 1):
        with states.hosting(device):
            draws[device] = torch.rand(3)  # the device's own stream
            model(torch.randn(4, 1, 4, 4) + device).sum().backward()  # batch-norm statistics move
            for t in plan.shared:
                model.get_parameter(t.name).grad = None
            optimizer.step()  # local parameters only
            optimizer.zero_grad()
    states.rest()
    zero, one = states.states[0], states.states[1]
    assert not torch.equal(zero.buffers["1.running_mean"], one.buffers["1.running_mean"])
    assert not torch.equal(states.row(0)[0]["0.log_sigma2"], states.row(1)[0]["0.log_sigma2"])
    assert torch.equal(model[1].running_mean, zero.buffers["1.running_mean"])  # device 0 rests in the model
    assert torch.equal(model[0].log_sigma2, states.row(0)[0]["0.log_sigma2"])
    assert optimizer.state[model[0].log_sigma2] is zero.optimizer["0.log_sigma2"]
    assert not torch.equal(draws[0], draws[1])
    again = DeviceStates(small_model(), plan, devices=[1], seed=7)  # another process hosting device 1
    with again.hosting(1):
        assert torch.equal(torch.rand(3), draws[1])


def test_device_states_of_a_model_without_parameters_live_on_the_cpu():
    """Nothing to read the device from (a parameter-free model, e.g. a fixed feature map): the CPU."""
    model = nn.Sequential(nn.ReLU())
    states = DeviceStates(model, SharingPlan(model), devices=[0, 1], seed=0)
    assert states.where == torch.device("cpu")


def test_device_states_round_trip_through_a_state_dict():
    model = small_model()
    plan = SharingPlan(model)
    states = DeviceStates(model, plan, devices=[2, 3], seed=0)
    with states.hosting(3):
        model[0].log_sigma2.data.fill_(-4.0)
    restored = DeviceStates(small_model(), plan, devices=[3], seed=1)
    restored.load_state_dict(states.state_dict())
    assert torch.equal(restored.row(3)[0]["0.log_sigma2"], states.row(3)[0]["0.log_sigma2"])
    with pytest.raises(ValueError, match=r"no state for devices \[4\]"):
        DeviceStates(small_model(), plan, devices=[4], seed=0).load_state_dict(states.state_dict())


@pytest.mark.parametrize("saved_as", ["with its header", "without a header", "of another layout"])
def test_rows_on_disk_resume_from_a_checkpoint_s_copy_file_to_file(saved_as, tmp_path, monkeypatch):
    """A resume takes each saved row into the new store: copied inside the kernel when the saved
    rows are of the store's layout (the folder's schema header says so, or the checkpoint's layout
    for a folder of lightning-fed <= 0.3 without one): no row passes through memory, so a resume of
    many devices stays as small as the fresh run; read and written otherwise (a stage's state the
    new store does not keep in rows stays in memory). Devices that never trained stay holes."""
    import lightning_fed.federation.device_state as device_state

    model = small_model()
    plan = SharingPlan(model)
    stage_names = ("residual",) if saved_as == "of another layout" else ()
    live = tmp_path / "live"
    states = DeviceStates(model, plan, devices=[0, 1, 2], seed=0, rows_path=live, stage_names=stage_names)
    with states.hosting(1) as state:
        model[0].log_sigma2.data.fill_(-4.0)
        model[3].log_sigma2.data.fill_(-5.0)
        state.stages["residual"] = [torch.full((n,), 0.5) for n in plan.numels]
    states.rest()
    states.rows.copy_to(tmp_path / "saved")
    saved, layout = states.state_dict(), [(name, list(shape)) for name, shape in states.layout]
    if saved_as == "without a header":
        (tmp_path / "saved" / "schema.json").unlink()
    if saved_as != "of another layout":
        never = lambda *args, **kwargs: pytest.fail("a row was read into memory")  # noqa: E731
        monkeypatch.setattr(device_state, "read_row", never)
    restored = DeviceStates(small_model(), plan, devices=[0, 1, 2], seed=0, rows_path=tmp_path / "new")
    restored.load_state_dict(saved, rows_file=lambda rank: tmp_path / "saved", rows_layout=layout)
    row = restored.rows.read(1)[0]
    assert torch.equal(row["0.log_sigma2"], torch.full_like(row["0.log_sigma2"], -4.0))
    assert torch.equal(row["3.log_sigma2"], torch.full_like(row["3.log_sigma2"], -5.0))
    assert restored.rows.row_of(0) is None and restored.rows.row_of(2) is None
    in_memory = restored.states[1].stages.get("residual")
    assert (in_memory is not None) == (saved_as == "of another layout")
    assert in_memory is None or all(torch.equal(t, torch.full_like(t, 0.5)) for t in in_memory)


def test_rows_of_a_folder_without_a_header_are_read_in_the_checkpoint_s_layout_into_a_store_in_memory(
    tmp_path,
):
    """A folder of lightning-fed <= 0.3 has no schema header: a resume into memory reads each row in
    the layout the checkpoint names (without it the rows could not be read)."""
    model = small_model()
    plan = SharingPlan(model)
    states = DeviceStates(model, plan, devices=[0, 1], seed=0, rows_path=tmp_path / "live")
    with states.hosting(1):
        model[0].log_sigma2.data.fill_(-4.0)
    states.rest()
    states.rows.copy_to(tmp_path / "saved")
    (tmp_path / "saved" / "schema.json").unlink()
    layout = [(name, list(shape)) for name, shape in states.layout]
    restored = DeviceStates(small_model(), plan, devices=[0, 1], seed=0)  # rows in memory
    restored.load_state_dict(
        states.state_dict(), rows_file=lambda rank: tmp_path / "saved", rows_layout=layout
    )
    row = restored.rows.read(1)[0]["0.log_sigma2"]
    assert torch.equal(row, torch.full_like(row, -4.0))


@pytest.mark.parametrize("most", [None, 4])  # bytes the kernel copies a call: all, or one float
def test_a_row_adopted_from_one_file_of_rows_of_0_2_is_the_row_at_its_offset_and_a_short_file_is_refused(
    most, tmp_path, monkeypatch
):
    import os

    from lightning_fed.federation import device_rows
    from lightning_fed.federation.device_rows import DiskRows, RowSchema

    if most is not None:  # a copy in several calls, as the kernel may make one
        real = os.copy_file_range
        monkeypatch.setattr(
            device_rows.os, "copy_file_range", lambda i, o, n, *at: real(i, o, min(n, most), *at)
        )

    old = tmp_path / "rows.f32"  # lightning-fed <= 0.2: every row in one file, row r at r * row bytes
    np.arange(12, dtype=np.float32).tofile(old)
    rows = DiskRows(tmp_path / "live", devices=[5, 6], schema=RowSchema([("w", (3,))]))
    rows.adopt(6, old, source_row=2)
    assert rows.read(6)[0]["w"].tolist() == [6.0, 7.0, 8.0]
    with pytest.raises(ValueError, match=r"rows.f32 is truncated: it has no row 4$"):
        rows.adopt(5, old, source_row=4)


@pytest.mark.parametrize("field", ["format", "dtype"])
def test_a_header_that_is_not_one_of_device_rows_of_float32_is_refused(field, tmp_path):
    import json

    from lightning_fed.federation.device_rows import SCHEMA, DiskRows, RowSchema, saved_layout

    rows = DiskRows(tmp_path / "rows", devices=[0], schema=RowSchema([("w", (2,))]))
    assert saved_layout(rows.path) == [("w", (2,))]
    header = json.loads((rows.path / SCHEMA).read_text())
    (rows.path / SCHEMA).write_text(json.dumps({**header, field: "float16"}))
    with pytest.raises(ValueError, match=r"schema.json is not a schema header of device rows$"):
        saved_layout(rows.path)


def test_a_device_s_failure_is_one_line_naming_device_step_and_error_even_without_a_message():
    assert str(DeviceFailed(3, 12, KeyError())) == "device 3 failed at step 12: KeyError"
    error = DeviceFailed(4, 7, ValueError("shapes differ\nsecond line"))
    assert str(error) == "device 4 failed at step 7: ValueError: shapes differ"
    assert (error.device, error.step) == (4, 7)


def test_a_checkpoint_s_rows_of_another_layout_than_their_header_are_refused(tmp_path):
    """The header names what the bytes are; a checkpoint that names another layout is refused."""
    from lightning_fed.federation.device_rows import DiskRows, RowSchema, read_row

    rows = DiskRows(tmp_path / "live", devices=[0], schema=RowSchema([("w", (2,))]))
    rows.write(0, {"w": torch.tensor([1.0, 2.0])}, {})
    rows.copy_to(tmp_path / "saved")
    assert read_row(tmp_path / "saved", 0)["w"].tolist() == [1.0, 2.0]  # the header is enough
    with pytest.raises(ValueError, match="rows of another layout"):
        read_row(tmp_path / "saved", 0, [("w", (1,)), ("v", (1,))])


def test_device_state_keeps_each_part_by_name_and_reads_a_checkpoint_s_extra_of_0_3(tmp_path):
    """A stage's state and the algorithm's are named parts of a device's state, checkpointed by
    name; a checkpoint of lightning-fed <= 0.3 kept both in one ``extra`` dict and resumes the same."""
    model = small_model()
    plan = SharingPlan(model)
    states = DeviceStates(model, plan, devices=[0, 1], seed=0)
    with states.hosting(1) as state:
        state.stages["residual"] = [torch.full((n,), 2.0) for n in plan.numels]
        state.algorithm["scaffold_c"] = [torch.ones(n) for n in plan.numels]
    saved = states.state_dict()
    assert set(saved[1]) == {"params", "buffers", "optimizer", "rng", "stages", "algorithm", "drawn"}
    assert list(saved[1]["stages"]) == ["residual"] and list(saved[1]["algorithm"]) == ["scaffold_c"]
    old = {d: {k: v for k, v in s.items() if k not in ("stages", "algorithm")} for d, s in saved.items()}
    old[1]["extra"] = {**saved[1]["stages"], **saved[1]["algorithm"]}
    for checkpoint in (saved, old):
        restored = DeviceStates(small_model(), plan, devices=[0, 1], seed=0)
        restored.load_state_dict(checkpoint)
        assert torch.equal(restored.row(1)[1]["residual"][0], saved[1]["stages"]["residual"][0])
        assert restored.states[1].algorithm["scaffold_c"][0].tolist() == [1.0] * plan.numels[0]
        assert restored.row(0)[1] == {}


def test_a_save_at_the_step_already_saved_keeps_those_rows_in_either_format(tmp_path):
    """A session resumed at a step saves again at that step (an epoch end): the rows saved then are
    the rows now, whether a folder or a file of rows of lightning-fed <= 0.2."""
    from lightning_fed.federation.device_rows import DiskRows, RowSchema, read_row

    layout = [("w", (2,))]
    rows = DiskRows(tmp_path / "live", devices=[0, 1], schema=RowSchema(layout))
    rows.write(1, {"w": torch.tensor([1.0, 2.0])}, {})
    old_format = tmp_path / "last.ckpt.rows-0.step-20"
    old_format.write_bytes(torch.tensor([0.0, 0.0, 1.0, 2.0]).numpy().tobytes())  # rows 0 and 1
    rows.copy_to(old_format)
    assert old_format.is_file() and read_row(old_format, 1, layout)["w"].tolist() == [1.0, 2.0]
    rows.copy_to(tmp_path / "step-21")
    rows.copy_to(tmp_path / "step-21")
    assert read_row(tmp_path / "step-21", 1, layout)["w"].tolist() == [1.0, 2.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt.rows-0.step-20", "live", "step-21"]


def test_a_running_sum_weights_every_update_not_only_the_first():
    """Weights other than 1 on every update, the first included, against a hand computation."""
    from lightning_fed.federation import RunningSum

    total = RunningSum()
    for update, weight in (([1.0, 0.0], 2.0), ([3.0, 4.0], 0.5), ([5.0, 2.0], 3.0)):
        total.add([torch.tensor(update)], weight=weight)
    assert total.tensors[0].tolist() == [2 * 1.0 + 0.5 * 3.0 + 3 * 5.0, 0.5 * 4.0 + 3 * 2.0]
    assert total.weight == 5.5


def test_the_in_process_transport_sums_what_the_messages_hold_and_counts_their_bytes():
    codec, ledger = SparseCodec(), CommunicationLedger()
    transport = InProcess(codec, numels=[3, 2], ledger=ledger)
    sent = []
    for values in ([1.0, 0.0, 0.0], [0.0, 2.0, 0.0]):
        payload = codec.encode([torch.tensor(values), torch.tensor([0.5, 0.0])])
        sent.append(len(payload))
        transport.upload(Message(UPDATE, len(sent) - 1, 0, payload, weight=1.0))
    total, weight = transport.server_sum()
    assert [t.tolist() for t in total] == [[1.0, 2.0, 0.0], [1.0, 0.0]]
    traffic = ledger.end_step(epoch=0)
    assert (weight, traffic.upload, traffic.upload_bytes, traffic.download) == (2.0, 4, sum(sent), 0)
    average = Message(AVERAGE, SERVER, 0, codec.encode([torch.tensor([0.5, 1.0, 0.0]), torch.zeros(2)]))
    assert transport.download(average, codec, receivers=3)[0].tolist() == [0.5, 1.0, 0.0]
    traffic = ledger.end_step(epoch=0)
    assert (traffic.download, traffic.download_bytes, traffic.upload) == (3 * 2, 3 * len(average), 0)


def test_hosting_gives_equal_contiguous_blocks_and_refuses_the_rest():
    assert [hosted_devices(8, 4, r) for r in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert sorted(sum((hosted_devices(16, 2, r) for r in range(2)), [])) == list(range(16))
    for processes, message in [
        (0, "integer >= 1"),
        (17, "more than the 16 devices"),
        (3, "do not divide 16"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_processes(processes, 16)
