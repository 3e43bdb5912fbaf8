"""The mask at other thresholds (lightning_fed.nn.thresholds) and scripts/threshold_sweep.py."""

import math
import re

import pytest
import torch
from torch import nn

from datamodules import FederatedDataModule
from lightning_fed.nn import log_alpha_of, sparsity, variational
from lightning_fed.nn.thresholds import accuracy_at_thresholds, at_threshold
from modules.classifier import SparseVDClassifier
from scripts.threshold_sweep import main


def kept_weights(network: nn.Module) -> tuple[int, int]:
    total = sparsity(network)["total"]
    return total.kept, total.total


def _network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = variational(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.log_sigma2.uniform_(-6.0, 2.0)  # log_alpha spread over both sides of 0 to 6
    return net


def test_each_threshold_keeps_the_weights_whose_log_alpha_is_below_it_and_the_old_one_comes_back():
    net = _network()
    log_alphas = torch.cat(
        [log_alpha_of(layer.weight, layer.log_sigma2).flatten() for layer in (net[0], net[2])]
    )
    for threshold in (-1.0, 1.5, 3.0, 5.0):
        with at_threshold(net, threshold):
            assert kept_weights(net) == (int((log_alphas < threshold).sum()), 72)
    with at_threshold(net, None):
        assert kept_weights(net) == (72, 72)
    with pytest.raises(RuntimeError), at_threshold(net, 0.0):
        raise RuntimeError("the block fails")
    assert net[0].threshold == net[2].threshold == 3.0


def test_the_accuracy_at_a_threshold_is_that_of_the_weights_it_keeps():
    net = _network()
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    rows = accuracy_at_thresholds(net, [(x[:40], y[:40]), (x[40:], y[40:])], [3.0, None])
    for (_, kept, total, accuracy), masked in zip(rows, (True, False), strict=True):
        h = x
        for layer in (net[0], net[2]):
            weight = layer.weight * layer.keep_mask() if masked else layer.weight
            h = torch.nn.functional.linear(h, weight, layer.bias)
            h = torch.relu(h) if layer is net[0] else h
        assert accuracy == (h.argmax(-1) == y).float().mean().item()
        assert total == 72 and kept == (kept_weights(net)[0] if masked else 72)


def test_a_bad_threshold_is_refused():
    with (
        pytest.raises(ValueError, match=r"^threshold must be a finite number"),
        at_threshold(_network(), math.nan),
    ):
        pass


def _checkpoint(path, dense: bool = False):
    """A checkpoint as fit.py writes it: the module's state and hyper-parameters."""
    torch.manual_seed(0)
    model = SparseVDClassifier("lenet300_100", num_train=100, num_classes=10, in_channels=1, dense=dense)
    if not dense:
        with torch.no_grad():
            for name, parameter in model.network.named_parameters():
                if name.endswith("log_sigma2"):
                    parameter.uniform_(-14.0, -2.0)  # some of the small weights pruned
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return model


def test_the_script_prints_each_threshold_s_kept_weights_and_test_accuracy(tmp_path, capsys):
    model = _checkpoint(tmp_path / "last.ckpt")
    main([str(tmp_path / "last.ckpt"), "--dataset", "mnist-5k", "--thresholds", "3,none"])
    lines = capsys.readouterr().out.strip().splitlines()
    dm = FederatedDataModule("mnist-5k", batch_size=512)
    dm.setup("test")
    (_, kept, total, accuracy), (_, all_kept, _, theta) = accuracy_at_thresholds(
        model.network, dm.test_dataloader(), [3.0, None]
    )
    assert 0 < kept < total == all_kept
    assert lines[2] == f"| 3 | {kept:,} of {total:,} ({100 * kept / total:.2f} %) | {100 * accuracy:.2f} % |"
    assert lines[3] == f"| none (theta) | {total:,} of {total:,} (100.00 %) | {100 * theta:.2f} % |"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thresholds", "3,abc"], r"--thresholds: 'abc' is not allowed \(a finite number or none\)"),
        (["--thresholds", "inf"], r"--thresholds: 'inf' is not allowed \(a finite number or none\)"),
        (["--dataset", "cifar11"], r"--dataset: invalid choice: 'cifar11'"),
    ],
)
def test_bad_options_are_one_line_errors_naming_them(tmp_path, capsys, args, message):
    _checkpoint(tmp_path / "last.ckpt")
    before = (tmp_path / "last.ckpt").read_bytes()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "last.ckpt"), *args])
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and re.search(message, error[0])
    assert (tmp_path / "last.ckpt").read_bytes() == before


@pytest.mark.parametrize("case", ["dense", "missing"])
def test_a_dense_or_missing_checkpoint_is_a_one_line_error(tmp_path, case):
    if case == "dense":
        _checkpoint(tmp_path / "last.ckpt", dense=True)
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "last.ckpt"), "--dataset", "mnist-5k"])
    expected = "holds a dense model (--dense)" if case == "dense" else "does not exist"
    assert str(stop.value).startswith("threshold_sweep.py: error: ") and expected in str(stop.value)
    assert "\n" not in str(stop.value)
