"""``SparseModelExport``: write the trained sparse model compactly, and read it back.

The file is a ``torch.save`` of ``{"format": FORMAT, "tensors": {name: entry}}``. A sparse entry
holds the shape, the original dtype, the kept values (float32 or float16) and their positions,
as a packed bitmap (numel / 8 bytes) or as int32 flat indices (4 bytes per kept value),
whichever is smaller; every other tensor is stored as it is.

Which weights are sparse: a layer with a ``keep_mask()`` method (a variational layer) exports
``weight * keep_mask()`` and drops its other extra parameters (``log_sigma2``), so the file is the
state dict of the *plain* network; any other weight of two or more dimensions is exported by its
exact non-zeros (so a magnitude-pruned model gets the same treatment).
"""

import io
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

FORMAT = "lightning-fed-sparse/1"
VALUE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@torch.no_grad()
def inference_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain network: masked weights of variational layers, no log_sigma2."""
    state = {k: v.detach() for k, v in module.state_dict().items()}
    for name, layer in module.named_modules():
        if not callable(getattr(layer, "keep_mask", None)):
            continue
        prefix = f"{name}." if name else ""
        for key in [k for k in state if k.startswith(prefix) and "." not in k[len(prefix) :]]:
            if key[len(prefix) :] not in ("weight", "bias"):
                del state[key]
        state[f"{prefix}weight"] = layer.weight.detach() * layer.keep_mask()
    return state


def encode_tensor(tensor: torch.Tensor, value_dtype: torch.dtype = torch.float32) -> dict:
    """One tensor's entry: sparse (bitmap or indices) for float weights of >= 2 dims, else as is.

    Example::

        >>> entry = encode_tensor(torch.tensor([[0.0, 2.0], [0.0, 0.0]]))
        >>> sorted(entry), entry["values"].tolist()
        (['bitmap', 'dtype', 'shape', 'values'], [2.0])
    """
    tensor = tensor.detach().cpu()
    if tensor.dim() < 2 or not tensor.is_floating_point():
        return {"dense": tensor.clone()}
    flat = tensor.reshape(-1)
    kept = flat != 0
    entry = {"shape": tuple(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
    entry["values"] = flat[kept].to(value_dtype)
    count = int(kept.sum())
    if count * 4 < (flat.numel() + 7) // 8:
        entry["indices"] = kept.nonzero().reshape(-1).to(torch.int32)
    else:
        entry["bitmap"] = torch.from_numpy(np.packbits(kept.numpy()))
    return entry


def decode_tensor(entry: dict) -> torch.Tensor:
    """Inverse of :func:`encode_tensor` (values cast back to the original dtype).

    Example::

        >>> decode_tensor(encode_tensor(torch.tensor([[0.0, 2.0], [3.0, 0.0]]))).tolist()
        [[0.0, 2.0], [3.0, 0.0]]
    """
    if "dense" in entry:
        return entry["dense"]
    dtype = getattr(torch, entry["dtype"])
    numel = int(np.prod(entry["shape"]))
    flat = torch.zeros(numel, dtype=dtype)
    if "indices" in entry:
        flat[entry["indices"].long()] = entry["values"].to(dtype)
    else:
        kept = np.unpackbits(entry["bitmap"].numpy(), count=numel).astype(bool)
        flat[torch.from_numpy(kept)] = entry["values"].to(dtype)
    return flat.reshape(entry["shape"])


def save_sparse(module: torch.nn.Module, path, value_dtype: str = "float32") -> int:
    """Write ``module``'s inference state dict compactly to ``path``; returns the file's bytes."""
    tensors = {
        k: encode_tensor(v, VALUE_DTYPES[value_dtype]) for k, v in inference_state_dict(module).items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "tensors": tensors}, path)
    return path.stat().st_size


def load_sparse_state_dict(path) -> dict[str, torch.Tensor]:
    """Read a file written by :class:`SparseModelExport` back into a dense state dict.

    Load it into the plain (non-variational) network: ``network.load_state_dict(state)``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sparse model {str(path)!r} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a {FORMAT} file")
    return {name: decode_tensor(entry) for name, entry in payload["tensors"].items()}


def dense_size(state: dict[str, torch.Tensor]) -> int:
    """Bytes of ``torch.save(state)``: what the dense state dict would take on disk."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


class SparseModelExport(pl.Callback):
    """At the end of fit, writes the sparse model to ``dirpath/filename`` and logs its size.

    Logs ``export/sparse_bytes``, ``export/dense_bytes`` and ``export/ratio`` to every logger
    (rank zero only). Read the file back with :func:`load_sparse_state_dict`.

    Args:
        dirpath: folder of the file (default: the trainer's ``log_dir`` or ``default_root_dir``).
        filename: name of the file.
        value_dtype: ``"float32"`` (exact) or ``"float16"`` (half the value bytes).

    Example::

        >>> SparseModelExport(value_dtype="float16").value_dtype
        'float16'
    """

    def __init__(self, dirpath=None, filename: str = "sparse_model.pt", value_dtype: str = "float32") -> None:
        if value_dtype not in VALUE_DTYPES:
            raise ValueError(f"value_dtype must be one of {', '.join(VALUE_DTYPES)}, got {value_dtype!r}")
        if not isinstance(filename, str) or not filename or os.sep in filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.dirpath, self.filename, self.value_dtype = dirpath, filename, value_dtype
        self.sizes: dict[str, int] = {}
        self.path: Path | None = None

    def _target(self, trainer: pl.Trainer) -> Path:
        folder = self.dirpath or trainer.log_dir or trainer.default_root_dir
        return Path(folder) / self.filename

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.path = self._target(trainer)
        sparse_bytes = save_sparse(pl_module, self.path, self.value_dtype)
        dense_bytes = dense_size(inference_state_dict(pl_module))
        self.sizes = {"export/sparse_bytes": sparse_bytes, "export/dense_bytes": dense_bytes}
        self.sizes["export/ratio"] = sparse_bytes / dense_bytes
        for logger in trainer.loggers:
            logger.log_metrics(dict(self.sizes), step=trainer.global_step)
        rank_zero_info(f"SparseModelExport: {self.path} ({sparse_bytes:,} bytes, dense {dense_bytes:,})")

    @override
    def state_dict(self) -> dict:
        return {"sizes": dict(self.sizes)}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.sizes = dict(state_dict.get("sizes", {}))
