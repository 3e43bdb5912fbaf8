"""Small datasets written in the real formats (idx, CIFAR-10 pickles, SVHN .mat) for tests."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path = Path(str(path) + ".gz") if compress else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def indexed_images(n: int, size: int = 28) -> np.ndarray:
    """Images whose first two pixels spell their own index (i // 256, i % 256)."""
    images = np.zeros((n, size, size), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) // 256
    images[:, 0, 1] = np.arange(n) % 256
    return images


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 600, n_test: int = 100) -> Path:
    raw = root / folder / "raw"
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", indexed_images(n))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return raw


def write_cifar10(root: Path, per_batch: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, per_batch)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


def write_svhn(root: Path, n: int = 50) -> dict[str, np.ndarray]:
    """SVHN's .mat files of ``n`` random images a split; returns the labels as written (1 to 10)."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    written = {}
    for split in ("train", "test"):
        labels = rng.integers(1, 11, (n, 1))  # SVHN stores digit 0 as 10
        savemat(
            root / f"{split}_32x32.mat",
            {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": labels},
        )
        written[split] = labels.reshape(-1)
    return written
