"""SecAgg+ (lightning_fed.secure): the unmasked sum is the plain sum bit for bit, drop-outs at every
point of the round, the server never holding an unmasked upload or both secrets of one device."""

import numpy as np
import pytest

from lightning_fed.secure import SecAggAborted, SecAggPlus, check_secagg, neighbour_graph
from lightning_fed.secure import secagg as protocol

LENGTH = 1000


def _inputs(devices, seed=0):
    rng = np.random.default_rng(seed)
    return {d: rng.integers(0, 2**32, LENGTH, dtype=np.uint32) for d in devices}


def _plain_sum(inputs, devices):
    return np.sum([inputs[d].astype(np.uint64) for d in devices], axis=0) % 2**32


def _silent_apart(graph, count: int, spare: int) -> list[int]:
    """``count`` devices of ``graph`` such that none has more than ``spare`` of them as neighbours."""
    chosen, silent_neighbours = [], dict.fromkeys(graph, 0)
    for device in graph:
        if len(chosen) < count and all(silent_neighbours[n] < spare for n in graph[device]):
            chosen.append(device)
            for n in graph[device]:
                silent_neighbours[n] += 1
    assert len(chosen) == count
    return chosen


@pytest.mark.parametrize("neighbours, threshold", [(4, 3), (6, 4), (11, 7)])
def test_the_unmasked_sum_is_the_plain_sum_with_devices_silent_at_every_point(neighbours, threshold):
    devices = list(range(100, 124))
    inputs = _inputs(devices)
    graph = neighbour_graph(devices, neighbours, seed=(7, 3, 1))  # the round's, as the protocol draws it
    early, after_sharing, after_masking = (
        [d] for d in _silent_apart(graph, 3, neighbours - threshold)
    )  # fmt: skip
    reporting = {d: inputs[d] for d in devices if d not in early + after_sharing}
    outcome = SecAggPlus(neighbours, threshold, seed=7).run(
        devices, reporting, step=3, silent_before_sharing=early, silent_after_masking=after_masking
    )
    assert outcome.reported == sorted(reporting) and outcome.silent == after_sharing
    assert np.array_equal(outcome.total, _plain_sum(inputs, reporting))


def test_without_drop_outs_the_complete_graph_is_classic_secagg():
    devices = [1, 2, 3, 4, 5]
    inputs = _inputs(devices, seed=1)
    outcome = SecAggPlus(neighbours=4, threshold=3, seed=0).run(devices, inputs, step=0)
    assert np.array_equal(outcome.total, _plain_sum(inputs, devices))
    keys = 4 + 32 + 32
    assert outcome.bytes["keys/up"] == 5 * keys and outcome.bytes["keys/down"] == 5 * 4 * keys


def test_every_message_is_counted_by_kind_at_its_length():
    devices = list(range(8))
    inputs = _inputs(devices)
    outcome = SecAggPlus(neighbours=4, threshold=3, seed=0).run(devices, inputs, step=0)
    pairs = 8 * 4  # each device's shares to its 4 neighbours
    share = 8 + 12 + (8 + 33 + 33) + 16  # route, nonce, (sender, receiver, two shares), GCM tag
    assert outcome.bytes["shares/up"] == outcome.bytes["shares/down"] == pairs * share
    assert outcome.bytes["masked/up"] == 8 * 4 * LENGTH
    assert outcome.bytes["unmasking/up"] == pairs * (4 + 1 + 33)  # owner, kind, share
    assert outcome.bytes["unmasking/down"] == 8 * 8 * 4  # the reported ids, to each device


def test_too_few_answers_stop_the_round_naming_the_device_and_the_option():
    devices = list(range(6))
    graph = neighbour_graph(devices, 2, seed=(0, 0, 1))
    owner = 0
    quiet = graph[owner]  # both of device 0's neighbours send their input, then fall silent
    with pytest.raises(
        SecAggAborted, match=r"^round 0: device 0's self-mask seed needs 2 shares \(--secagg-threshold\)"
    ):
        SecAggPlus(neighbours=2, threshold=2, seed=0).run(
            devices, _inputs(devices), step=0, silent_after_masking=quiet
        )


def test_a_round_too_small_for_the_threshold_stops_before_any_key_is_drawn():
    with pytest.raises(
        SecAggAborted, match=r"^a round of 3 devices gives each 2 neighbours, under the threshold 3"
    ):
        SecAggPlus(neighbours=4, threshold=3, seed=0).run([1, 2, 3], _inputs([1, 2, 3]), step=0)


def _spied(monkeypatch):
    """What leaves each device for the server: masked uploads and unmasking answers."""
    sent = {"masked": {}, "unmask": {}}
    masked, unmask = protocol._Device.masked, protocol._Device.unmask

    def spy_masked(self, words):
        sent["masked"][self.ident] = out = masked(self, words)
        return out

    def spy_unmask(self, reported, silent):
        sent["unmask"][self.ident] = out = unmask(self, reported, silent)
        return out

    monkeypatch.setattr(protocol._Device, "masked", spy_masked)
    monkeypatch.setattr(protocol._Device, "unmask", spy_unmask)
    return sent


def test_the_server_never_holds_an_unmasked_upload_nor_both_secrets_of_a_device(monkeypatch):
    devices = list(range(10))
    inputs = _inputs(devices)
    sent = _spied(monkeypatch)
    reporting = {d: inputs[d] for d in devices if d != 4}
    SecAggPlus(neighbours=4, threshold=3, seed=0).run(devices, reporting, step=0)
    for device, message in sent["masked"].items():
        words = np.frombuffer(message, dtype="<u4")
        assert not np.any(words == inputs[device])  # 1,000 words: a match has odds 2**-32 each
    kinds = {}
    for message in sent["unmask"].values():
        for offset in range(0, len(message), 38):
            owner = int.from_bytes(message[offset : offset + 4], "little")
            kinds.setdefault(owner, set()).add(chr(message[offset + 4]))
    assert kinds[4] == {"s"} and all(kinds[d] == {"b"} for d in reporting)


def test_one_device_s_masked_upload_is_uniform_words(monkeypatch):
    """A chi-square test on the top 4 bits of 40,000 masked words of an all-zero input (15 degrees
    of freedom: mean 15, sd 5.5; 60 is 8 sd out). Seeded, so the verdict is the same every run."""
    devices = list(range(6))
    sent = _spied(monkeypatch)
    zeros = {d: np.zeros(40_000, dtype=np.uint32) for d in devices}
    SecAggPlus(neighbours=2, threshold=2, seed=11).run(devices, zeros, step=0)
    words = np.frombuffer(sent["masked"][0], dtype="<u4")
    counts = np.bincount(words >> 28, minlength=16)
    expected = words.size / 16
    assert ((counts - expected) ** 2 / expected).sum() < 60


def test_the_same_seed_gives_the_same_messages_and_another_seed_other_masks(monkeypatch):
    devices = list(range(6))
    inputs = _inputs(devices)
    runs = []
    for seed in (5, 5, 6):
        sent = _spied(monkeypatch)
        outcome = SecAggPlus(neighbours=2, threshold=2, seed=seed).run(devices, inputs, step=1)
        runs.append((sent["masked"][0], outcome.bytes, outcome.total))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert runs[0][0] != runs[2][0] and np.array_equal(runs[0][2], runs[2][2])


def test_a_tampered_share_is_refused():
    from cryptography.exceptions import InvalidTag

    from lightning_fed.secure.primitives import KeySource

    source = KeySource(seed=0)
    a, b = protocol._Device(1, source), protocol._Device(2, source)
    keys = {1: (a.advertise()[4:36], a.advertise()[36:]), 2: (b.advertise()[4:36], b.advertise()[36:])}
    message = a.share({2: keys[2]}, threshold=1)[2]
    b.keys = {1: keys[1]}
    tampered = message[:-1] + bytes([message[-1] ^ 1])
    with pytest.raises(InvalidTag):
        b.receive(1, tampered)


@pytest.mark.parametrize(
    "neighbours, threshold, message",
    [
        (1, 1, r"secagg_neighbours=1 must be a whole number >= 2"),
        (256, 200, r"secagg_neighbours=256 must be at most 255"),
        (4, 5, r"secagg_threshold=5 must be a whole number of the 4 neighbours' shares \(3 to 4\)"),
        (4, 2, r"secagg_threshold=2 must be above half of the 4 neighbours \(3 to 4\)"),
        (5, 2.5, r"secagg_threshold=2.5 must be a whole number"),
    ],
)
def test_bad_secagg_settings_are_one_line_errors(neighbours, threshold, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        check_secagg(neighbours, threshold)


@pytest.mark.parametrize("n, k", [(10, 4), (10, 3), (11, 3), (11, 4), (7, 6), (50, 12)])
def test_the_graph_is_regular_and_symmetric(n, k):
    graph = neighbour_graph(list(range(n)), k, seed=0)
    degree = k if (k % 2 == 0 or n % 2 == 0) else k + 1
    assert {len(v) for v in graph.values()} == {min(degree, n - 1)}
    assert all(a in graph[b] and a != b for a in graph for b in graph[a])


# ---------------------------------------------------------------- in a federation


def _network():
    import torch
    from torch import nn

    from lightning_fed.nn import variational

    net = variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)))
    with torch.no_grad():
        net[1].log_sigma2[:8] = 10.0  # log alpha >> 3: half the first layer is pruned
    return net


def _fit(data_dir, root, max_steps=4, **options):
    from lightning_fed import FederatedStrategy
    from tests.helpers.small_fit import small_fit

    return small_fit(data_dir, root, _network, FederatedStrategy(**options), max_steps)


FEDAVG = {"local_steps": 2, "client_optimizer": "sgd", "client_lr": 0.05}


DP = {"share_log_sigma2": True, "dp_clip": 0.5, "dp_noise_multiplier": 0.3}


UNION = {"secagg_support": "union"}


@pytest.mark.parametrize("options", [{}, {"share_log_sigma2": True}, {"failure_rate": 0.3}, DP, UNION])
def test_a_secure_run_trains_the_model_of_the_plain_run_within_the_fixed_point_step(
    data_dir, tmp_path, options
):
    import torch

    plain_options = {k: v for k, v in options.items() if k != "secagg_support"}
    plain, _ = _fit(data_dir, tmp_path / "plain", **FEDAVG, **plain_options)
    secure, strategy = _fit(
        data_dir, tmp_path / "secure", secure_aggregation=True, secagg_range=100.0, **FEDAVG, **options
    )
    assert strategy.transport_of_round.point.clipped == 0  # the KL's pull on small theta stays in range
    secure_options = {"secure_aggregation": True, "secagg_range": 100.0, **FEDAVG, **options}
    assert strategy.config.secagg_support == secure_options.get("secagg_support", "dense")
    # each round's average is off by under one step of the words (100 / (2**31 // 4) = 1.9e-7) per
    # value; 4 rounds and the trajectories' own amplification of it stay under 1e-5
    for (name, a), b in zip(plain.state_dict().items(), secure.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name
    sent = strategy.transport_of_round.bytes_by_kind
    ledger = strategy.ledger.total
    assert ledger.upload_bytes == sum(v for k, v in sent.items() if k.endswith("/up"))
    assert sent["keys/up"] > 0 and sent["shares/up"] > 0 and sent["unmasking/up"] > 0


def test_under_the_variant_the_union_sends_fewer_words_than_the_dense_vector(data_dir, tmp_path):
    """The network's pruned half has no update under the paper's masking, so no device keeps it:
    the union's count (3-bit fields for 4 devices) and values cost less than every coordinate."""
    secure = {"secure_aggregation": True, "max_steps": 2, **FEDAVG}
    _, dense = _fit(data_dir, tmp_path / "dense", **secure)
    _, union = _fit(data_dir, tmp_path / "union", secagg_support="union", **secure)
    words = {k: v for k, v in union.transport_of_round.bytes_by_kind.items() if k.endswith("masked/up")}
    numel = 784 * 16 + 16 + 16 * 10 + 10
    assert dense.transport_of_round.bytes_by_kind["masked/up"] == 2 * 4 * 4 * numel  # 2 rounds, 4 devices
    assert words["masked/up"] < 2 * 4 * 4 * (numel - 8 * 784)  # no device sends the pruned half
    assert words["support masked/up"] == 2 * 4 * 4 * -(
        -numel // 10
    )  # counts to 4: 10 fields of 3 bits a word
    assert union.ledger.total.upload_bytes < dense.ledger.total.upload_bytes


def test_under_algorithm_1_only_the_public_mask_s_kept_coordinates_are_summed(data_dir, tmp_path):
    _, strategy = _fit(
        data_dir, tmp_path, max_steps=1, secure_aggregation=True, share_log_sigma2=True, **FEDAVG
    )
    import torch

    torch.manual_seed(0)  # as small_fit builds the network: the model the round's devices received
    net = _network()
    kept = int(net[1].keep_mask().sum() + net[3].keep_mask().sum())
    assert kept < 784 * 8 + 160  # the pruned half and the init's smallest weights
    words = 2 * kept + 16 + 10  # theta and log_sigma2 where kept, and the biases
    assert strategy.transport_of_round.bytes_by_kind["masked/up"] == 4 * 4 * words  # 4 devices


@pytest.mark.parametrize(
    "options, message",
    [
        ({"codec": "qsgd:8"}, r"^secure_aggregation does not go with a codec"),
        ({"aggregator": "median"}, r"^secure_aggregation does not go with aggregator='median'"),
        ({"aggregation": "weighted"}, r"^secure_aggregation does not go with aggregation='weighted'"),
        ({"secagg_range": 0.0}, r"^secagg_range must be a finite number above 0, got 0.0"),
        ({"secagg_neighbours": 8, "secagg_threshold": 5}, r"^secagg_threshold=5 exceeds the 3 neighbours"),
    ],
)
def test_a_secure_run_that_cannot_work_is_a_one_line_error(data_dir, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        _fit(data_dir, tmp_path, max_steps=1, secure_aggregation=True, **{**FEDAVG, **options})


def test_secagg_settings_without_secure_aggregation_are_refused():
    from lightning_fed import FederatedStrategy

    with pytest.raises(ValueError, match=r"^secagg_neighbours needs secure_aggregation=True$"):
        FederatedStrategy(secagg_neighbours=4)


def test_devices_silent_after_masking_still_count_and_the_sum_stays_exact():
    """The transport's late drop-outs: their masked words are in the sum, their self masks are
    rebuilt from their neighbours' shares; with 12 neighbours and T = 7 half the round can go."""
    import torch

    from lightning_fed.communication import SparseCodec
    from lightning_fed.federation.messages import UPDATE, Message
    from lightning_fed.secure.transport import SecureTransport

    codec, devices = SparseCodec(), list(range(20))
    transport = SecureTransport(codec, [3], SecAggPlus(12, 7, seed=0), 4.0, 20, late_failure_rate=0.3)
    transport.begin_round(devices, keeps=None, step=5, seed=1)
    for d in devices:
        transport.upload(Message(UPDATE, d, 5, codec.encode([torch.tensor([0.125, -0.25, float(d % 3)])])))
    total, reported = transport.server_sum()
    assert reported == 20.0 and total[0].tolist() == [2.5, -5.0, 19.0]  # 0.125 a step of 2**31 // 20
    draws = np.random.default_rng((1, 5, 7)).random(20)
    assert 0 < sum(draws < 0.3) < 20  # some, not all, were silent in the unmasking
    assert transport.bytes_by_kind["unmasking/up"] < 20 * 12 * 38  # fewer answers than devices x K


def test_a_late_failure_rate_out_of_range_or_without_secure_aggregation_is_refused():
    from lightning_fed import FederatedStrategy

    with pytest.raises(ValueError, match=r"^secagg_late_failure_rate must be in \[0, 1\), got 1.0$"):
        FederatedStrategy(secure_aggregation=True, secagg_late_failure_rate=1.0)
    with pytest.raises(ValueError, match=r"^secagg_late_failure_rate needs secure_aggregation=True$"):
        FederatedStrategy(secagg_late_failure_rate=0.1)


def test_a_round_split_over_two_processes_gives_one_process_s_sum_and_bytes():
    """Across processes each masks its own devices' inputs and the partial masked sums are added:
    the total and every count are one process's, devices silent after sharing and masking included.
    Two processes are played in turn here: the first's partial sum is what the second adds."""
    devices = list(range(30))
    inputs = _inputs(devices, seed=4)
    reporting = {d: inputs[d] for d in devices if d not in (3, 17)}  # silent after sharing
    late = [8]
    protocol = SecAggPlus(neighbours=8, threshold=5, seed=11)
    whole = protocol.run(devices, reporting, step=2, silent_after_masking=late)

    first = {d: w for d, w in reporting.items() if d % 2 == 0}
    second = {d: w for d, w in reporting.items() if d % 2 == 1}
    passed = {}

    def hand_over(total, sent):
        passed.update(total=total.copy(), sent=sent)
        return total, sent

    def add_first(total, sent):
        return total + passed["total"], sent + passed["sent"]

    everyone = sorted(reporting)
    protocol.run(devices, first, step=2, silent_after_masking=late, reported=everyone, add_across=hand_over)
    split = protocol.run(
        devices, second, step=2, silent_after_masking=late, reported=everyone, add_across=add_first
    )
    assert np.array_equal(split.total, whole.total) and np.array_equal(
        whole.total, _plain_sum(inputs, everyone)
    )
    assert split.bytes == whole.bytes and (split.reported, split.silent) == (whole.reported, whole.silent)
    # a partial masked sum alone is not the partial plain sum: the masks do not cancel within one half
    assert not np.array_equal(passed["total"], _plain_sum(inputs, sorted(first)))


@pytest.mark.slow
@pytest.mark.parametrize("form", [["--share-log-sigma2"], ["--secagg-support", "union"]])
def test_a_secure_run_in_two_processes_is_the_one_process_run_bit_for_bit(tmp_path, form):
    """Each process masks its own devices' inputs, the partial sums are all-reduced, every process
    unmasks: the weights and the ledger are one process's, late drop-outs included, under
    Algorithm 1's public mask and under the variant's union of supports."""
    import json

    import torch

    from tests.test_fit_cli import fit

    runs = []
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        result = fit(
            "--devices", "8", "--devices-per-round", "6", "--local-steps", "2", "--processes", str(processes),
            "--dataset", "mnist-5k", "--network", "lenet300_100", "--max-rounds", "3", "--max-epochs", "1",
            "--secure-aggregation", "--secagg-range", "10", *form,
            "--secagg-late-failure-rate", "0.3", "--wandb-mode", "disabled", "--output-dir", str(out),
            cwd=tmp_path, one_thread=True,  # else one process trains on two threads, two on one each
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        history = json.loads((out / "ledger.json").read_text())["history"]
        keys = ("download", "download_bytes", "upload", "upload_bytes", "reported")
        weights = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        runs.append(([{k: h[k] for k in keys} for h in history], weights, history[-1]["transport_bytes"]))
    (ledger_1, weights_1, _), (ledger_2, weights_2, between) = runs
    assert ledger_1 == ledger_2 and all(h["upload_bytes"] > 0 for h in ledger_2)
    assert weights_1.keys() == weights_2.keys() and all(
        torch.equal(weights_1[k], weights_2[k]) for k in weights_1
    )
    assert between > 0  # the partial masked sums crossed between the processes


def test_the_union_support_sums_each_device_s_kept_values_over_the_coordinates_any_kept():
    """``support='union'``: a secure sum of packed counts first (its own kinds in the ledger), then
    the values over the union alone; outside it the sum is exactly zero, inside within the
    fixed point's step a device (range / levels: 4 / (2**31 // 8))."""
    import torch

    from lightning_fed.communication import SparseCodec
    from lightning_fed.federation.messages import UPDATE, Message
    from lightning_fed.secure.support import packed_length
    from lightning_fed.secure.transport import SecureTransport

    codec, devices, numels = SparseCodec(), list(range(8)), [30, 12]
    rng = np.random.default_rng(3)
    updates = {}
    for d in devices:  # each device keeps its own few coordinates, none keeps coordinates 36 to 41
        flat = np.zeros(42, dtype=np.float32)
        kept = rng.choice(36, size=5, replace=False)
        flat[kept] = rng.uniform(-1, 1, 5)
        updates[d] = torch.from_numpy(flat)
    transport = SecureTransport(codec, numels, SecAggPlus(6, 4, seed=0), 4.0, 8, support="union")
    transport.begin_round(devices, keeps=None, step=0, seed=2)
    for d in devices:
        transport.upload(Message(UPDATE, d, 0, codec.encode(list(updates[d].split(numels)))))
    total, reported = transport.server_sum()
    flat = torch.cat(total)
    expected = torch.stack(list(updates.values())).sum(0)
    union = expected != 0
    assert reported == 8.0 and not flat[~union].any()
    assert torch.allclose(flat, expected, rtol=0, atol=8 * 4.0 / (2**31 // 8))
    sent = transport.bytes_by_kind
    assert sent["support masked/up"] == 8 * 4 * packed_length(42, 4)  # 4-bit counts: 8 a word
    assert sent["masked/up"] == 8 * 4 * int(union.sum()) < 8 * 4 * 42
    assert transport.ledger.pending.upload == 8 * (packed_length(42, 4) + int(union.sum()))
    assert sent["support keys/up"] == sent["keys/up"]  # a second sum: keys of its own, as many
    # every message of both sums is in the ledger, the server's to the devices too (keys, shares)
    pending = transport.ledger.pending
    assert pending.upload_bytes == sum(v for k, v in sent.items() if k.endswith("/up"))
    assert pending.download_bytes == sum(v for k, v in sent.items() if k.endswith("/down")) > 0


def test_the_count_sum_draws_other_keys_than_the_values_sum():
    """The union's count is a second sum in the round (``stream=1``): masks of its own, so two
    masked vectors of one device never share a keystream."""
    devices, inputs = [1, 2, 3, 4], _inputs([1, 2, 3, 4])
    protocol, masked = SecAggPlus(neighbours=3, threshold=2, seed=5), {}

    def seen_as(stream):
        def add_across(total, sent):  # the masked sum before the unmasking
            masked[stream] = total.copy()
            return total, sent

        return add_across

    totals = [protocol.run(devices, inputs, step=1, stream=s, add_across=seen_as(s)).total for s in (0, 1)]
    assert all(np.array_equal(total, _plain_sum(inputs, devices)) for total in totals)
    assert not np.array_equal(masked[0], masked[1])  # other self masks on the same inputs


@pytest.mark.parametrize("max_devices", [1, 4, 7, 8, 50, 63, 64, 1000])
def test_packed_counts_of_a_full_round_never_carry_into_the_next_field(max_devices):
    """Every device keeping every coordinate is the largest count a field holds: summed modulo
    2^32 over ``max_devices`` packed supports, each field still reads ``max_devices`` exactly, and
    a coordinate nobody kept reads 0."""
    import torch

    from lightning_fed.secure.support import count_bits, pack_support, unpack_counts

    bits = count_bits(max_devices)
    numel = 3 * (32 // bits) + 1  # a last word only partly filled
    update = torch.ones(numel)
    update[5] = 0.0  # nobody keeps coordinate 5
    words = pack_support([update], bits)
    total = (words.astype(np.uint64) * max_devices % 2**32).astype(np.uint32)
    expected = np.full(numel, max_devices)
    expected[5] = 0
    assert np.array_equal(unpack_counts(total, bits, numel), expected)
    assert bits == 1 or count_bits(2 ** (bits - 1) - 1) < bits  # no wider than it must be


def test_a_round_too_large_for_32_bit_words_is_a_one_line_error_saying_the_limit():
    """Each value gets (2**31 - 1) // n steps of a word; below 2**8 steps a sum drowns in rounding."""
    from lightning_fed.secure.fixed_point import FixedPoint

    assert FixedPoint(1.0, max_devices=8_388_607).levels == 2**8
    message = (
        r"^8388609 devices a round leave 255 steps of 32-bit words to each value; their sum could not "
        r"be told from noise \(at most 8,388,607 devices\)$"
    )
    with pytest.raises(ValueError, match=message):
        FixedPoint(1.0, max_devices=8_388_609)


def test_under_secure_aggregation_the_server_has_no_single_update_to_give_a_robust_aggregator():
    from lightning_fed.communication import SparseCodec
    from lightning_fed.secure.transport import SecureTransport

    transport = SecureTransport(SparseCodec(), [4], SecAggPlus(3, 2, seed=0), 4.0, 4)
    with pytest.raises(
        ValueError, match=r"^under secure aggregation the server holds no single update \(only their sum\)$"
    ):
        transport.server_updates()
