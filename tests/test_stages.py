"""A message's way as a list of stages, typed messages, and counts the receiver derives from bytes."""

import pytest
import torch
from torch import nn

from lightning_fed import FederatedStrategy
from lightning_fed.communication import Codec, Payload, SparseCodec, make_codec
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.config import FederationConfig
from lightning_fed.federation.messages import SERVER, UPDATE, Message, read
from lightning_fed.federation.stages import MaskByAlpha, Sending, Stage, Way
from lightning_fed.federation.transport import _HEAD, _unpack
from lightning_fed.nn import variational
from tests.helpers.small_fit import small_fit


def _fit(data_dir, root, max_steps, **strategy_options):
    def network():
        return variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)))

    return small_fit(data_dir, root, network, FederatedStrategy(**strategy_options), max_steps)


class ClipNorm(Stage):
    """A user's stage: each upload scaled to L2 norm at most ``bound``; it notes the norms it saw."""

    def __init__(self, bound: float) -> None:
        self.bound, self.seen = bound, []

    def __repr__(self) -> str:
        return f"ClipNorm({self.bound})"

    def __call__(self, tensors, sending, rest):
        norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))
        self.seen.append(norm)
        scale = min(1.0, self.bound / norm) if norm else 1.0
        return rest([t * scale for t in tensors])


def test_the_built_in_ways_are_the_options_stages_in_order_with_a_user_s_stage_before_the_codec():
    clip = ClipNorm(1.0)
    compression = Compression(
        "topk:0.1", error_feedback=True, error_feedback_momentum=0.9, download_codec="qsgd:8",
        download_error_feedback=True, upload_stages=[clip],
    )  # fmt: skip
    assert repr(compression.upload_way) == (
        "Way(MaskByAlpha -> MomentumCorrection(0.9) -> ErrorFeedback -> topk:0.1 -> ClipNorm(1.0)"
        " -> SparseCodec(float32))"
    )
    assert repr(compression.download_way) == "Way(ServerErrorFeedback -> SparseCodec(qsgd:8))"
    assert compression.feedback_kinds == ("residual", "velocity")
    assert repr(Compression().upload_way) == "Way(MaskByAlpha -> SparseCodec(float32))"


def test_a_stage_sees_the_rest_of_the_way_s_result_and_the_payload_is_decoded_once():
    decodes = []

    class Counting(SparseCodec):
        def decode(self, payload, numels):
            decodes.append(len(payload))
            return super().decode(payload, numels)

    class Looks(Stage):  # a second stage that reads what the receiver decodes
        def __call__(self, tensors, sending, rest):
            sent = rest(tensors)
            sending.state["looked"] = sent.decoded()[0].clone()
            return sent

    from lightning_fed.federation.error_feedback import ErrorFeedback

    state = {}
    way = Way([Looks(), ErrorFeedback()], Counting())
    sent = way.send([torch.tensor([1.0, 0.0, -2.0])], Sending(state, step=0, seed=0))
    assert state["looked"].tolist() == [1.0, 0.0, -2.0] and state["residual"][0].tolist() == [0.0, 0.0, 0.0]
    assert len(decodes) == 1 and sent.decoded() is sent.decoded()


def test_mask_by_alpha_zeroes_exactly_the_pruned_entries_and_leaves_unmasked_tensors_alone():
    keep = torch.tensor([True, False, True, False])
    sending = Sending({}, step=0, seed=0, keeps=[keep, None])
    sent = Way([MaskByAlpha()], make_codec(None)).send([torch.ones(4) * 3, torch.ones(2)], sending)
    first, second = sent.decoded()
    assert first.tolist() == [3.0, 0.0, 3.0, 0.0] and second.tolist() == [1.0, 1.0]


def test_a_user_s_upload_stage_runs_on_every_upload_of_a_run_and_bounds_what_is_sent(
    data_dir, tmp_path, monkeypatch
):
    bound = 0.05
    clip = ClipNorm(bound)
    sent = []
    original = Compression.encode_upload

    def spy(self, *args, **kwargs):
        payload = original(self, *args, **kwargs)
        sent.append(payload)
        return payload

    monkeypatch.setattr(Compression, "encode_upload", spy)
    _, strategy = _fit(data_dir, tmp_path, max_steps=3, upload_stages=[clip])
    assert len(clip.seen) == len(sent) == 12  # 4 devices, 3 rounds: every upload went through it
    assert max(clip.seen) > bound  # it had something to clip
    for payload in sent:
        decoded = strategy.codec.decode(payload, strategy.plan.numels)
        norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in decoded)))
        assert norm <= bound * (1 + 1e-5)  # float32 rounding of the scaled entries


@pytest.mark.parametrize("stages", [[lambda tensors: tensors], "clip", [ClipNorm(1.0), None]])
def test_stages_that_are_not_stage_objects_are_a_one_line_error_naming_the_option(stages):
    with pytest.raises(
        ValueError, match=r"^upload_stages must be a list of lightning_fed\.federation\.stages\.Stage"
    ):
        FederatedStrategy(upload_stages=stages)
    with pytest.raises(ValueError, match=r"^download_stages must be a list of"):
        FederationConfig(download_stages=stages)


def test_a_resume_with_other_stages_is_refused_naming_them():
    saved = FederationConfig(upload_stages=[ClipNorm(1.0)]).trajectory(num_devices=4, seed=0)
    same = FederationConfig(upload_stages=[ClipNorm(1.0)]).trajectory(num_devices=4, seed=0)
    FederationConfig().check_resume(saved, same, "last.ckpt")
    other = FederationConfig(upload_stages=[ClipNorm(2.0)]).trajectory(num_devices=4, seed=0)
    with pytest.raises(
        ValueError, match=r"^checkpoint last.ckpt was trained with upload_stages \[ClipNorm\(1.0\)\], "
    ):
        FederationConfig().check_resume(saved, other, "last.ckpt")


def test_the_receiver_counts_values_from_the_bytes_for_any_codec():
    class Halves(Codec):  # a user's codec: float16 values of every entry
        lossy = True

        def encode(self, tensors, *, step=0, seed=0):
            return Payload(b"".join(t.to(torch.float16).numpy().tobytes() for t in tensors))

        def decode(self, payload, numels):
            return list(torch.frombuffer(bytearray(payload.data), dtype=torch.float16).float().split(numels))

    codec = Halves()
    message = Message(UPDATE, 2, 7, codec.encode([torch.tensor([0.0, 1.5, -2.0])]))
    tensors, traffic = read(message, codec, [3])
    assert tensors[0].tolist() == [0.0, 1.5, -2.0]
    assert (traffic.upload, traffic.upload_bytes, traffic.download) == (2, 6, 0)  # the non-zero entries
    down = Message("model", SERVER, 7, message.payload)
    assert read(down, codec, [3], receivers=5)[1].download_bytes == 5 * 6


def test_messages_cross_processes_with_their_sender_round_and_weight():
    codec = SparseCodec()
    messages = [
        Message(UPDATE, 3, 11, codec.encode([torch.tensor([0.0, 2.0])]), weight=0.25),
        Message(UPDATE, 1, 11, codec.encode([torch.tensor([5.0, 0.0])]), weight=4.0),
    ]
    wire = b"".join(_HEAD.pack(m.sender, m.round, m.weight, len(m)) + m.payload.data for m in messages)
    assert _unpack(wire) == messages


def test_a_codec_s_filters_become_stages_and_its_writer_keeps_its_encodings_and_value_coder():
    from lightning_fed.communication import make_codec
    from lightning_fed.communication.codecs import SparseCodec
    from lightning_fed.federation.stages import codec_stages

    codec = SparseCodec(
        ["indices"], values=make_codec("qsgd:8").values, filters=make_codec("topk:0.5").filters
    )
    stages, writer = codec_stages(codec)
    assert [repr(s) for s in stages] == ["topk:0.5"]
    assert [e.name for e in writer.encodings] == ["indices"] and writer.values is codec.values
    assert not writer.filters
