"""What the Lightning adapter (:class:`~lightning_fed.strategy.FederatedStrategy`) accepts from
Lightning and hands back to it: the loader's batches, the round's loss, the options and plugins
it can honour (each refusal one line)."""

import inspect
from collections.abc import Mapping

import torch
from torch.nn.parallel import DistributedDataParallel

from lightning_fed.federation.paper_protocol import PaperProtocol


class DeviceBatches:
    """A loader's ``{device: batch}`` as a source of each hosted device's batch of the step."""

    def __init__(self, batch, hosted: list[int]) -> None:
        if isinstance(batch, Mapping) and batch and all(isinstance(k, int) for k in batch):
            if sorted(batch) != hosted:
                raise ValueError(
                    f"this process hosts devices {hosted}, the batch holds devices {sorted(batch)}"
                )
            self.batches = dict(batch)
        elif len(hosted) == 1:
            self.batches = {hosted[0]: batch}
        else:
            raise ValueError(
                f"this process hosts devices {hosted}, but the train loader gives one batch per step; "
                "use FederatedDataModule, or yield {device: batch} for every hosted device"
            )

    def batches_per_pass(self, device: int) -> int:
        return 0

    def batch(self, device: int, step: int):
        return self.batches[device]


def round_output(output, losses: list[torch.Tensor], device):
    """The round's loss for Lightning: the mean over this process's reporting devices."""
    mean = torch.stack(losses).mean() if losses else torch.zeros((), device=device)
    if isinstance(output, Mapping) or (output is None and not losses):
        return {**(output or {}), "loss": mean}
    return mean


def check_supported(strategy, trainer) -> None:
    """Refuse what the rounds cannot honour, in one line each."""
    if not strategy.lightning_module.automatic_optimization:
        raise ValueError("FederatedStrategy runs the rounds itself: use automatic optimization")
    if len(strategy.optimizers) != 1:
        raise ValueError(f"FederatedStrategy needs exactly one optimizer, got {len(strategy.optimizers)}")
    if trainer.accumulate_grad_batches != 1:
        raise ValueError(
            f"accumulate_grad_batches={trainer.accumulate_grad_batches} is not supported: "
            "one step is one round of the protocol"
        )
    if getattr(strategy.precision_plugin, "scaler", None) is not None:
        raise ValueError(
            f"precision={trainer.precision!r} scales the loss, and the devices' steps are not unscaled; "
            "use precision='32-true' or 'bf16-mixed'"
        )
    if trainer.gradient_clip_val:
        raise ValueError(
            f"gradient_clip_val={trainer.gradient_clip_val} would clip the server's step only, not each "
            "device's; leave it unset"
        )


def checked_ddp_options(options: dict) -> dict:
    """The DDPStrategy options the federation takes: process placement, backend, timeout."""
    options = without_ddp_defaults(options)  # LightningCLI passes every one of them, as defaults
    for key in ("ddp_comm_hook", "ddp_comm_state", "ddp_comm_wrapper", "model_averaging_period"):
        if options.get(key) is not None:
            raise ValueError(
                f"FederatedStrategy exchanges messages itself and takes no {key}; "
                "pass a codec (lightning_fed.communication.Codec) instead"
            )
    return options


def without_ddp_defaults(kwargs: dict) -> dict:
    """``kwargs`` less the DistributedDataParallel options that are None or at their defaults
    (LightningCLI passes every one of them)."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(DistributedDataParallel.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {k: v for k, v in kwargs.items() if not (k in defaults and (v is None or _same(v, defaults[k])))}


def _same(value, default) -> bool:
    try:
        return bool(value == default)
    except Exception:  # a tensor or another value with no plain equality
        return False


def batch_source(batch, algorithm, hosted: list[int]):
    """The round's batches: the datamodule's device streams, or a loader's ``{device: batch}``
    (the paper's protocol only)."""
    if callable(getattr(batch, "batch", None)):
        return batch
    if not isinstance(algorithm, PaperProtocol):
        raise ValueError(
            "a train loader of {device: batch} serves the paper's protocol only (every device, every "
            "round, one step); use FederatedDataModule for sampled rounds or local steps"
        )
    return DeviceBatches(batch, hosted)
