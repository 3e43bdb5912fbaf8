"""The benchmark's engines compute what they claim: the batched clients are the plain loop's."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts" / "simulation"), str(ROOT / "scripts")]
import batched  # noqa: E402
import common  # noqa: E402


def _clients():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(20, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (20,), generator=generator)
    # 5, 3 and 8 examples at batch 2: a short last batch, and 3, 2 and 4 local steps
    shards = [np.arange(0, 5), np.arange(5, 8), np.arange(8, 16)]
    return images, labels, shards


def test_batched_clients_train_the_models_the_plain_loop_trains():
    images, labels, shards = _clients()
    torch.manual_seed(0)
    model = common.network()
    orders = [np.random.default_rng(i).permutation(shard) for i, shard in enumerate(shards)]
    steps = batched.padded_steps(orders, images, labels, batch_size=2)
    stacked = batched.batched_local_epochs(model, steps, lr=0.05, clients=len(shards))
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    for client, order in enumerate(orders):
        local = common.network()
        local.load_state_dict(model.state_dict())
        optimizer = torch.optim.SGD(local.parameters(), lr=0.05)
        common.local_epoch(local, optimizer, images, labels, order, 2, _Fixed(order))
        for name, param in local.named_parameters():
            # rounding: the batched kernels sum in another order; an update is ~1e-2, off by ~1e-7
            torch.testing.assert_close(stacked[name][client], param.detach(), rtol=1e-4, atol=1e-5)
            assert not torch.equal(param.detach(), start[name])  # every client moved every tensor
    assert len(steps) == 4  # the longest shard's steps; the others are padded with weight zero


class _Fixed:
    """A generator whose permutation is the order given: the plain loop then takes that order."""

    def __init__(self, order: np.ndarray) -> None:
        self.order = order

    def permutation(self, shard: np.ndarray) -> np.ndarray:
        assert sorted(shard) == sorted(self.order)
        return self.order


def test_a_step_of_padding_only_leaves_a_client_as_it_was():
    images, labels, _ = _clients()
    torch.manual_seed(0)
    model = common.network()
    orders = [np.arange(0, 4), np.arange(4, 6)]  # two steps, one
    steps = batched.padded_steps(orders, images, labels, batch_size=2)
    two = batched.batched_local_epochs(model, steps, lr=0.05, clients=2)
    one = batched.batched_local_epochs(model, steps[:1], lr=0.05, clients=2)
    for name in two:
        assert torch.equal(two[name][1], one[name][1])  # the second client's padded step did nothing
        assert not torch.equal(two[name][0], one[name][0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "--device tpu: give cpu, cuda or cuda:N"),
        (["--settings", "100/x"], "--settings 100/x: give N/K pairs with 1 <= K <= N"),
        (["--settings", "10/20"], "--settings 10/20: give N/K pairs with 1 <= K <= N"),
        (["--engines", "ours,fedml"], "--engines ours,fedml: unknown 'fedml'; choose from ours, plain"),
        (["--engines", "plain:2x1"], "--engines plain:2x1: only ours hosts its clients in several processes"),
        (["--engines", "ours:0x1"], "--engines ours:0x1: a layout is PxT, processes x threads, each at"),
        (["--engines", "pfl:1x1"], "--engines pfl:1x1: pfl runs as its package sets itself up"),
        (["--repeats", "0"], "--repeats 0: must be at least 1"),
    ],
)
def test_bad_benchmark_options_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    import benchmark_simulation

    with pytest.raises(SystemExit) as stop:
        benchmark_simulation.main([*args, "--json", str(tmp_path / "out.json")])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and f"benchmark_simulation.py: error: {message}" in error
    assert len(error.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_the_ratio_is_to_the_plain_loops_fastest_layout_of_the_same_repeat():
    import benchmark_simulation

    seconds = {(0, "ours:2x1"): 3.0, (0, "plain:1x1"): 2.0, (0, "plain:1x2"): 2.5,
               (1, "ours:2x1"): 3.0, (1, "plain:1x1"): 4.0, (1, "plain:1x2"): 1.5}  # fmt: skip
    rows = [
        {"clients": 10, "per_round": 2, "repeat": r, "engine": e, "round_s": s, "peak_gib": 1.0}
        for (r, e), s in seconds.items()
    ]
    ratios = {row["engine"]: row["x_plain"] for row in benchmark_simulation.summarise(rows)}
    assert ratios["ours:2x1"] == (3.0 / 2.0 + 3.0 / 1.5) / 2  # each repeat's best plain: 2.0, then 1.5
    assert ratios["plain:1x2"] == (2.5 / 2.0 + 1.5 / 1.5) / 2


def test_a_layout_reaches_the_engine_as_its_threads_and_processes():
    import benchmark_simulation

    def command(spec):
        return benchmark_simulation.engine_command("py", spec, Path("c.pt"), 50, 4, "cpu")

    assert command("ours:2x1")[-4:] == ["--threads", "1", "--processes", "2"]
    assert command("plain:1x2")[-2:] == ["--threads", "2"]
    assert "--threads" not in command("ours") and "--processes" not in command("ours")
    assert "--device" not in command("pfl")  # a peer runs as its package sets itself up


def test_several_processes_on_a_gpu_are_a_one_line_error(monkeypatch, capsys):
    import benchmark_simulation

    monkeypatch.setattr(benchmark_simulation, "device_problem", lambda device: None)  # as if it had one
    with pytest.raises(SystemExit) as stop:
        benchmark_simulation.parse_args(["--engines", "ours:2x1", "--device", "cuda"])
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(error.splitlines()) == 1
    assert error.endswith("--engines ours:2x1: several processes run on the CPU only, not --device cuda")


def test_the_peers_network_needs_only_torch_and_numpy():
    """Flower's and pfl-research's environments have no Lightning: the benchmark's network must load
    without it (``common.network`` reads ``modules/networks.py`` and its torch-only imports)."""
    import subprocess
    import sys as system

    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'scripts' / 'simulation')!r}); import common; "
        "net = common.network(); "
        "assert not {'pytorch_lightning', 'lightning', 'torchmetrics'} & set(sys.modules); "
        "print(sum(p.numel() for p in net.parameters()))"
    )
    result = subprocess.run([system.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 1_000_000  # CifarNet for 28 x 28 grey images
