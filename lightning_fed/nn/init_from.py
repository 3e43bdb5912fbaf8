"""Start a network's theta from a checkpoint or state dict of the same network, dense or variational."""

import os
import pickle
from collections.abc import Mapping

import torch
from torch import nn

LIGHTNING_PREFIX = "network."


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict:
    """Load a checkpoint file on the CPU with ``weights_only=True`` (tensors and plain containers
    only: a file from elsewhere runs no code), with a one-line error if it is missing or unreadable.

    ``mmap=True`` maps the tensors' storage instead of reading it: for a look at keys and shapes,
    a 300 MB checkpoint then costs no more than its pickled index."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):  # not a disallowed class: not a pickle at all
            raise ValueError(
                f"checkpoint {str(path)!r} is not a readable PyTorch file (UnpicklingError)"
            ) from None
        raise ValueError(
            f"checkpoint {str(path)!r} holds Python objects beyond tensors and plain containers; "
            "it is loaded with weights_only=True, so load it yourself (torch.load) if you trust its source"
        ) from None
    except Exception as error:  # torch raises many types for a corrupt or truncated file
        raise ValueError(
            f"checkpoint {str(path)!r} is not a readable PyTorch file ({type(error).__name__})"
        ) from None


def network_state(source: Mapping) -> dict[str, torch.Tensor]:
    """The network's own entries of a state dict or a Lightning checkpoint (``network.`` stripped)."""
    state = source.get("state_dict", source)
    if any(key.startswith(LIGHTNING_PREFIX) for key in state):
        state = {k[len(LIGHTNING_PREFIX) :]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
    return dict(state)


def init_from(network: nn.Module, source: str | os.PathLike | Mapping) -> nn.Module:
    """Copy theta (and log_sigma2 where the source has it) into ``network``.

    ``source`` is a path, a state dict, or a Lightning checkpoint dict, of the same architecture,
    dense or variational: a dense source sets theta and keeps the network's log_sigma2.

    Raises:
        ValueError: if a tensor is missing, extra, or of another shape.

    Example::

        >>> from lightning_fed.nn import variational
        >>> dense = nn.Linear(3, 2)
        >>> sparse = init_from(variational(nn.Linear(3, 2)), dense.state_dict())
        >>> torch.equal(sparse.weight, dense.weight)
        True
    """
    state = network_state(read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source)
    own = network.state_dict()
    optional = {key for key in own if key.endswith("log_sigma2")}
    missing = sorted(set(own) - set(state) - optional)
    extra = sorted(key for key in set(state) - set(own) if not key.endswith("log_sigma2"))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise ValueError(f"init_from: checkpoint does not match the network ({detail})")
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"init_from: {key!r} has shape {tuple(value.shape)} in the checkpoint, "
                f"network expects {tuple(own[key].shape)}"
            )
    network.load_state_dict({key: value for key, value in state.items() if key in own}, strict=False)
    return network
