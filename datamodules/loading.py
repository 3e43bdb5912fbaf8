"""Batched access to uint8 images, and the samplers of the federated loaders."""

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class TokenBatches(Dataset):
    """Windows of character indices and the next character, held once; a batch is two index ops.

    Example::

        >>> data = TokenBatches(torch.arange(12).view(4, 3), torch.arange(4))
        >>> x, y = data.__getitems__([1, 3])
        >>> x.tolist(), y.tolist()
        ([[3, 4, 5], [9, 10, 11]], [1, 3])
    """

    def __init__(self, windows: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = windows, labels  # ``images``: the name the loaders read

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reseed: no augmentation."""

    def __len__(self) -> int:
        return len(self.labels)

    def fetch(self, indices, key: list[int]):
        return self.__getitems__(indices)

    def __getitem__(self, index: int):
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[index], self.labels[index]


class ImageBatches(TokenBatches):
    """uint8 images held once, indexed as :class:`TokenBatches` are; a batch is converted and
    normalised on the fly, in one op.

    ``__getitems__`` makes the DataLoader fetch a whole batch at once; ``augment`` applies the
    usual random 4-pixel-padded crop and horizontal flip of the 32x32 datasets.

    Example::

        >>> data = ImageBatches(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4), (0.5,), (0.5,))
        >>> x, y = data.__getitems__([0, 2])
        >>> x.shape, x.unique().tolist(), y.tolist()
        (torch.Size([2, 1, 2, 2]), [-1.0], [0, 2])
    """

    def __init__(self, images, labels, mean, std, augment: bool = False, seed: int = 0) -> None:
        self.images, self.labels = images, labels
        self.scale = (1.0 / (255.0 * torch.tensor(std))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1)
        self.augment = augment
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the augmentation, so that epoch ``epoch`` draws the same crops after a resume."""
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)

    def fetch(self, indices, key: list[int]):
        """The batch of ``indices``, its augmentation drawn from a stream seeded by ``key`` alone."""
        if self.augment:
            self.generator.manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0]))
        return self.__getitems__(indices)

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.int64)
        x = self.images[index].float() * self.scale - self.shift
        if self.augment:
            x = self._crop_and_flip(x)
        return x, self.labels[index]

    def _crop_and_flip(self, x: torch.Tensor, pad: int = 4) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=self.generator)
        crops = torch.stack([padded[i, :, r : r + h, c : c + w] for i, (r, c) in enumerate(offsets.tolist())])
        flip = torch.rand(n, generator=self.generator) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), crops.flip(-1), crops)


def keep_batch(batch):
    """Collate function for :class:`ImageBatches`: the batch is already collated."""
    return batch


class ShardBatchSampler(Sampler[list[int]]):
    """Batches of one device's shard, ``num_batches`` per epoch, reshuffled every epoch.

    Every device must take the same number of steps per epoch (each step is a collective), so
    a shard smaller than the average is cycled and a larger one is sampled without repeats
    within the epoch. ``dataset.set_epoch`` (if any) is called as each epoch's iteration starts.

    Example::

        >>> sampler = ShardBatchSampler(np.arange(10), batch_size=4, num_batches=2, seed=0)
        >>> [len(b) for b in sampler], len(set(sum(list(sampler), [])))
        ([4, 4], 8)
    """

    def __init__(
        self, shard: np.ndarray, batch_size: int, num_batches: int, seed: int | list[int] = 0, dataset=None
    ) -> None:
        self.shard = np.asarray(shard)
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.seed = [int(s) for s in np.atleast_1d(seed)]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(self.epoch)
        rng = np.random.default_rng([*self.seed, self.epoch])
        needed = self.batch_size * self.num_batches
        rounds = -(-needed // len(self.shard))
        order = np.concatenate([rng.permutation(self.shard) for _ in range(rounds)])[:needed]
        yield from order.reshape(self.num_batches, self.batch_size).tolist()


class RankSlice(DistributedSampler):
    """Evaluation sampler: rank r takes samples r, r + W, r + 2W, ...; no padding, no duplicates.

    Being a ``DistributedSampler``, Lightning leaves it alone.
    """

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


class DeviceLoaders:
    """The train loader of a process: one batch per hosted device per step, as ``{device: batch}``.

    Not a ``DataLoader``, so Lightning leaves the devices' own samplers alone (it would swap in a
    ``DistributedSampler``); it forwards ``set_epoch`` to them, so every epoch reshuffles. With
    ``plain=True`` (a single device under a strategy that hosts one device per process) it yields
    that device's batches as they are.

    Example::

        >>> from torch.utils.data import DataLoader
        >>> loaders = {d: DataLoader(range(4), batch_size=2) for d in (2, 3)}
        >>> [batch[3].tolist() for batch in DeviceLoaders(loaders)]
        [[0, 1], [2, 3]]
    """

    def __init__(self, loaders: dict, plain: bool = False) -> None:
        if plain and len(loaders) != 1:
            raise ValueError(f"plain=True needs exactly one device loader, got {len(loaders)}")
        self.loaders = dict(loaders)
        self.plain = plain
        self.sampler = self  # Lightning calls loader.sampler.set_epoch(epoch) at every epoch start

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders.values():
            for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
                if callable(getattr(sampler, "set_epoch", None)):
                    sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders.values())

    def __iter__(self):
        if self.plain:
            yield from next(iter(self.loaders.values()))
            return
        devices = list(self.loaders)
        for batches in zip(*self.loaders.values(), strict=False):
            yield dict(zip(devices, batches, strict=True))


class ShardStream:
    """One device's batches as an endless, numbered sequence of reshuffled passes over its shard.

    Batch ``j`` is a pure function of ``(seed, j)``: a device resumes, or is hosted by another
    process, and draws the same batches. With ``batches_per_pass=None`` a pass is the shard once,
    its last batch short; with a number, a pass is that many full batches (the shard cycled, as
    :class:`ShardBatchSampler` does in an epoch, which pass ``p`` equals for ``epoch=p``).

    Example::

        >>> stream = ShardStream(np.arange(5), batch_size=2, seed=[0, 1])
        >>> stream.batches_per_pass, [len(stream.batch(j)) for j in range(4)]
        (3, [2, 2, 1, 2])
        >>> sorted(sum((stream.batch(j) for j in range(3)), []))
        [0, 1, 2, 3, 4]
    """

    def __init__(self, shard, batch_size: int, seed: list[int], batches_per_pass: int | None = None) -> None:
        self.shard = np.asarray(shard)
        if len(self.shard) == 0:
            raise ValueError("a device's shard is empty")
        self.batch_size = batch_size
        self.seed = [int(s) for s in seed]
        self.cycled = batches_per_pass is not None
        self.batches_per_pass = batches_per_pass or -(-len(self.shard) // batch_size)
        self._pass, self._order = -1, None

    def _order_of(self, index: int) -> np.ndarray:
        if index != self._pass:
            rng = np.random.default_rng([*self.seed, index])
            if self.cycled:
                needed = self.batch_size * self.batches_per_pass
                rounds = -(-needed // len(self.shard))
                self._order = np.concatenate([rng.permutation(self.shard) for _ in range(rounds)])[:needed]
            else:
                self._order = rng.permutation(self.shard)
            self._pass = index
        return self._order

    def batch(self, j: int) -> list[int]:
        """The sample indices of batch ``j`` (counted from the device's first batch)."""
        pass_index, position = divmod(j, self.batches_per_pass)
        start = position * self.batch_size
        return self._order_of(pass_index)[start : start + self.batch_size].tolist()


class DeviceStreams:
    """The train loader under a strategy that runs rounds: the devices' streams, once per round.

    Each iteration yields a :class:`RoundBatches` view of it (``rounds`` times per epoch); the
    strategy decides which devices take part and takes each one's next batches with its ``batch``. Not a
    ``DataLoader``, so Lightning neither replaces a sampler nor moves it; batches are fetched in
    the main process (the images are in memory, a batch is one indexing op).

    Example::

        >>> data = ImageBatches(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), torch.arange(6), (0.5,), (0.5,))
        >>> streams = DeviceStreams(data, {3: ShardStream(np.arange(3, 6), 2, [0, 3])}, rounds=2)
        >>> view = next(iter(streams))
        >>> len(streams), view.batch(3, 0)[1].tolist(), view.batch(3, 1)[1].tolist()
        (2, [5, 4], [3])
    """

    def __init__(self, dataset, streams: dict[int, ShardStream], rounds: int) -> None:
        self.dataset = dataset
        self.streams = dict(streams)
        self.rounds = int(rounds)
        self.sampler = self  # Lightning calls loader.sampler.set_epoch(epoch); batches are numbered

    def set_epoch(self, epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        """Nothing to save: batch ``j`` of a device is a pure function of the seed, and the position
        is the trainer's (step, batch index) or the device's ``drawn`` count. Having it tells
        Lightning the loader resumes mid-epoch exactly."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass

    def __len__(self) -> int:
        return self.rounds

    def __iter__(self):
        view = RoundBatches(self)
        for _ in range(self.rounds):
            yield view

    def batches_per_pass(self, device: int) -> int:
        return self.streams[device].batches_per_pass

    def batch(self, device: int, j: int):
        """Batch ``j`` of ``device``'s stream, as ``(images, labels)``."""
        stream = self.streams[device]
        return self.dataset.fetch(stream.batch(j), key=[*stream.seed, j])


class RoundBatches:
    """What a round's training step receives: access to the hosted devices' streams.

    Neither iterable nor a collection, so Lightning's batch handling (moving to a device,
    inferring a batch size) leaves it alone; the strategy moves each batch it takes.
    """

    def __init__(self, streams: DeviceStreams) -> None:
        self._streams = streams

    def batches_per_pass(self, device: int) -> int:
        return self._streams.batches_per_pass(device)

    def batch(self, device: int, j: int):
        """Batch ``j`` of ``device``'s stream, as ``(images, labels)``."""
        return self._streams.batch(device, j)
