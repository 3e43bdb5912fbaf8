"""scripts/cli.py: LightningCLI over the model, the datamodule and FederatedStrategy."""

import re
from pathlib import Path

import pytest
import yaml

from lightning_fed import FederatedStrategy
from scripts.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _tiny(data_dir, root, *extra):
    return [
        "fit", "--data.dataset", "mnist", "--data.data_dir", str(data_dir), "--data.num_devices", "4",
        "--data.batch_size", "16", "--data.val_size", "64", "--model.network", "lenet300_100",
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.accelerator", "cpu",
        "--trainer.devices", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(root), *extra,
    ]  # fmt: skip


def test_the_paper_s_cli_config_names_the_strategy_and_the_callbacks_by_class_path(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(ROOT / "configs/cli/fmnist_16.yaml"), "--print_config"])
    assert exit_.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["strategy"]["class_path"] == "lightning_fed.FederatedStrategy"
    paths = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert paths == ["callbacks.KLWarmup", "callbacks.SparsityMonitor", "callbacks.CommunicationMonitor",
                     "callbacks.RunCheckpoint"]  # fmt: skip
    assert config["data"]["num_devices"] == 16 and config["model"]["network"] == "cifarnet"


def test_a_run_through_the_cli_links_the_data_to_the_model_and_counts_the_codec_s_bytes(data_dir, tmp_path):
    cli = main(_tiny(data_dir, tmp_path, "--trainer.strategy.codec", "qsgd:8"))
    strategy = cli.trainer.strategy
    assert isinstance(strategy, FederatedStrategy) and repr(strategy.codec) == "SparseCodec(qsgd:8)"
    assert cli.model.hparams.num_train == cli.datamodule.num_train == 640 - 64
    total = strategy.ledger.total
    assert total.steps == 2 and 0 < total.upload_bytes < total.upload * 4  # a byte a value, plus scales


def test_a_private_run_through_the_cli_spends_what_its_accountant_says(data_dir, tmp_path):
    cli = main(_tiny(data_dir, tmp_path, "--trainer.strategy.dp_clip", "0.1",
                     "--trainer.strategy.dp_noise_multiplier", "2.0", "--model.dense", "true"))  # fmt: skip
    privacy = cli.trainer.strategy.server_aggregation.privacy
    assert privacy.rounds == 2 and privacy.clip == 0.1
    assert privacy.epsilon == privacy.accountant.epsilon(2) > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--trainer.strategy.codec", "qsgd:3"],
            "cli.py: error: codec 'qsgd:3': qsgd bits must be one of 2, 4, 8, got 3",
        ),
        (["--model.lr", "-1"], "cli.py: error: lr must be a finite number > 0, got -1.0"),
        (["--modle.lr", "1"], "cli.py: error: unrecognized arguments: --modle.lr 1"),
        (
            ["--trainer.strategy.dp_clip", "1", "--trainer.strategy.dp_noise_multiplier", "-1"],
            "cli.py: error: dp_noise_multiplier must be a finite number >= 0, got -1.0",
        ),
    ],
)
def test_bad_options_are_one_line_exit_2(extra, message, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(_tiny(data_dir, tmp_path, *extra))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert not list(tmp_path.iterdir())  # nothing written: no config.yaml, no logs


def test_the_paper_s_config_writes_under_default_root_dir_and_says_no_more_than_fit_py(
    data_dir, tmp_path, recwarn
):
    """The config's RunCheckpoint names no folder: its last.ckpt follows --trainer.default_root_dir;
    and the warnings fit.py drops (runs.screen) are dropped here too."""
    root = tmp_path / "elsewhere"
    main([
        "fit", "--config", str(ROOT / "configs/cli/fmnist_16.yaml"), "--data.dataset", "mnist",
        "--data.data_dir", str(data_dir), "--data.num_devices", "4", "--data.batch_size", "16",
        "--data.val_size", "64", "--model.network", "lenet300_100", "--trainer.max_steps", "2",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root),
    ])  # fmt: skip
    assert (root / "checkpoints" / "last.ckpt").is_file()
    dropped = r"self.log\('(comm|sparsity)/|LeafSpec|tensorboardX"
    noise = [str(w.message) for w in recwarn if re.search(dropped, str(w.message))]
    assert not noise, noise
