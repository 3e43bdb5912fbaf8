"""What pruned a weight (lightning_fed.nn.pruning) and scripts/pruning_report.py on a checkpoint file."""

import pytest
import torch

from lightning_fed.nn.pruning import layer_pruning, pruning_report
from scripts.pruning_report import main


def test_weights_pruned_by_noise_are_told_apart_from_those_pruned_by_theta():
    theta = torch.tensor([0.5, 1e-4, 0.5, 1e-4, 0.2])
    log_sigma2 = torch.tensor([-10.0, -10.0, 4.0, 4.0, -2.0])  # 3 and 4: risen log_sigma2
    report = layer_pruning(theta, log_sigma2, threshold=3.0, init_log_sigma2=-10.0)
    # pruned: 1 (theta), 2 (noise), 3 (both); kept: 0 and 4 (log_alpha of 4 is about 1.2)
    assert (report.total, report.kept, report.pruned, report.pruned_by_theta) == (5, 2, 3, 2)
    assert report.log_sigma2_quantiles[0] == pytest.approx(-10.0) and report.log_sigma2_quantiles[2] > 3.9


def test_a_higher_initial_log_sigma2_counts_more_weights_as_pruned_by_theta():
    theta, log_sigma2 = torch.tensor([0.01]), torch.tensor([-5.0])  # log_alpha = -5 + 9.2 = 4.2
    assert layer_pruning(theta, log_sigma2, 3.0, init_log_sigma2=-10.0).pruned_by_theta == 0
    assert layer_pruning(theta, log_sigma2, 3.0, init_log_sigma2=-5.0).pruned_by_theta == 1


def test_a_dense_state_is_refused():
    with pytest.raises(ValueError, match="no log_sigma2"):
        pruning_report({"0.weight": torch.ones(2)}, 3.0, -10.0)


def _checkpoint(path, devices: int = 2):
    """A checkpoint laid out as fit.py writes it: device 0's model, every device's own log_sigma2."""
    theta = torch.tensor([0.5, 0.5, 0.5, 1e-4])
    local = [
        {"params": {"network.0.log_sigma2": torch.full((4,), -10.0 + 14.0 * r)}, "optimizer": {}}
        for r in range(devices)
    ]  # device 0 prunes by theta only; device 1's log_sigma2 (4.0) prunes every weight by noise
    torch.save(
        {
            "state_dict": {
                "network.0.weight": theta,
                "network.0.log_sigma2": local[0]["params"]["network.0.log_sigma2"],
            },
            "hyper_parameters": {"threshold": 3.0, "init_log_sigma2": -10.0},
            "federated": {"local": local},
        },
        path,
    )
    return path


def test_the_script_reads_the_chosen_devices_own_log_sigma2(tmp_path, capsys):
    path = _checkpoint(tmp_path / "last.ckpt")
    main([str(path)])
    device0 = capsys.readouterr().out
    assert "| all | 4 | 75.0 % | | 100.0 % of the pruned |" in device0
    main([str(path), "--device", "1"])
    device1 = capsys.readouterr().out
    assert "| 0 | 4 | 0.0 % | 4.00 / 4.00 / 4.00 | 25.0 % of the pruned |" in device1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "2"], "--device 2: the checkpoint holds the local log_sigma2 of 2 devices (0 to 1)"),
        (["--device", "-1"], "--device -1: the checkpoint holds the local log_sigma2 of 2 devices"),
    ],
)
def test_a_device_the_checkpoint_lacks_is_a_one_line_error(tmp_path, args, message):
    path = _checkpoint(tmp_path / "last.ckpt")
    before = path.read_bytes()
    with pytest.raises(SystemExit) as stop:
        main([str(path), *args])
    assert str(stop.value).startswith(f"pruning_report.py: error: {message}")
    assert "\n" not in str(stop.value) and path.read_bytes() == before


def test_a_missing_or_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(
        SystemExit, match=r"^pruning_report.py: error: checkpoint .*missing.ckpt' does not exist$"
    ):
        main([str(tmp_path / "missing.ckpt")])
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    with pytest.raises(
        SystemExit, match=r"^pruning_report.py: error: checkpoint .* is not a readable PyTorch file"
    ):
        main([str(tmp_path / "bad.ckpt")])
