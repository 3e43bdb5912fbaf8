"""``FederatedStrategy``: N federated devices hosted by P processes, every exchange a counted payload."""

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import _sync_module_states
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from pytorch_lightning.trainer.states import TrainerFn
from typing_extensions import override

from lightning_fed.communication import Codec, CommunicationLedger, SparseCodec, Traffic
from lightning_fed.federation import TRANSPORTS, DeviceStates, SharingPlan, hosted_devices, make_transport
from lightning_fed.federation.checkpoint import (
    CHECKPOINT_KEY,
    sidecar_path,
)

AGGREGATIONS = ("mean", "weighted")
_NOT_TAKEN = ("ddp_comm_hook", "ddp_comm_state", "ddp_comm_wrapper", "model_averaging_period")


class FederatedStrategy(DDPStrategy):
    """N federated devices hosted by P processes, inside Lightning's DDP machinery.

    Each training step is one round of the paper's protocol. Every device this process hosts takes
    its own batch (``FederatedDataModule`` yields one per hosted device), computes the gradients of
    its ELBO as itself (its local log_sigma2, batch-norm statistics, optimizer state and random
    stream swapped in, :class:`~lightning_fed.federation.DeviceStates`), steps its local
    parameters, and uploads its masked shared gradients as a payload of its ``codec``. The server
    averages the decoded uploads (over N, or weighted by shard size), encodes the average as the
    download, and every device steps theta with what it decodes from it. The ledger counts every
    payload's bytes; ``transport`` says how payloads meet across processes (``dense``: sums
    all-reduced; ``sparse``: payloads all-gathered). Validation, test and checkpoints see device
    0's model; a checkpoint holds every device's state, each process writing its own devices'.

    Args:
        num_devices: N; by default the datamodule's ``num_devices``, else the number of processes.
        transport: ``"dense"`` or ``"sparse"`` (how messages cross processes; same model).
        share_log_sigma2: Algorithm 1 proper: log_sigma2 is shared (and masked) too.
        codec: the :class:`~lightning_fed.communication.Codec` of uploads and downloads.
        aggregation: ``"mean"`` (the paper: over N) or ``"weighted"`` (by the datamodule's shard sizes).
        mask: mask theta by ``M(alpha)`` before it is sent.
        **kwargs: passed to ``DDPStrategy`` (process placement, backend, timeout).

    Example::

        >>> strategy = FederatedStrategy(num_devices=16)
        >>> strategy.transport, strategy.share_log_sigma2, strategy.ledger.total.values
        ('dense', False, 0)
    """

    strategy_name = "federated"

    def __init__(
        self,
        num_devices: int | None = None,
        transport: str = "dense",
        share_log_sigma2: bool = False,
        codec: Codec | None = None,
        aggregation: str = "mean",
        mask: bool = True,
        **kwargs: Any,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        if num_devices is not None and (
            isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1
        ):
            raise ValueError(f"num_devices must be an integer >= 1, got {num_devices!r}")
        for key in _NOT_TAKEN:
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"FederatedStrategy exchanges messages itself and takes no {key}; "
                    "pass a codec (lightning_fed.communication.Codec) instead"
                )
        super().__init__(**kwargs)
        if self._ddp_kwargs:
            named = ", ".join(sorted(self._ddp_kwargs))
            raise ValueError(
                f"FederatedStrategy wraps no DistributedDataParallel, so {named} does not apply; "
                "pass only process placement, backend and timeout"
            )
        self.num_devices = num_devices
        self.transport = transport
        self.share_log_sigma2 = share_log_sigma2
        self.codec = codec if codec is not None else SparseCodec()
        self.aggregation = aggregation
        self.mask = mask
        self.ledger = CommunicationLedger()
        self.plan: SharingPlan | None = None
        self.devices: DeviceStates | None = None
        self._transport = None
        self._weights: dict[int, float] = {}
        self._resumed: dict[int, dict] | None = None

    # ------------------------------------------------------------------ hosting
    @property
    def hosted_devices(self) -> list[int]:
        """The federated devices this process hosts (contiguous, N / P of them)."""
        return hosted_devices(self._resolve_num_devices(), self.world_size, self.global_rank)

    def _resolve_num_devices(self) -> int:
        datamodule = getattr(self._lightning_module_trainer(), "datamodule", None)
        from_data = getattr(datamodule, "num_devices", None)
        if self.num_devices is not None and from_data is not None and from_data != self.num_devices:
            raise ValueError(
                f"FederatedStrategy(num_devices={self.num_devices}), but the datamodule has {from_data}"
            )
        self.num_devices = self.num_devices or from_data or self.world_size
        return self.num_devices

    def _lightning_module_trainer(self):
        module = self.lightning_module
        return getattr(module, "_trainer", None) if module is not None else None

    # -------------------------------------------------------------------- set-up
    @override
    def configure_ddp(self) -> None:
        # No DistributedDataParallel wrapper: the rounds below are the gradient synchronisation.
        # Every process starts from process 0's model (what DDP's wrapper would have broadcast).
        if self.world_size > 1:
            _sync_module_states(self.lightning_module)
        self.plan = SharingPlan(self.lightning_module, self.share_log_sigma2, self.mask)

    @override
    def setup(self, trainer) -> None:
        super().setup(trainer)
        if trainer.state.fn != TrainerFn.FITTING:
            return
        self._check_supported(trainer)
        module = self.lightning_module
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**63))
        self.devices = DeviceStates(module, self.plan, self.hosted_devices, seed, self.optimizers[0])
        if self._resumed is not None:
            self.devices.load_state_dict(self._resumed)
            self._resumed = None
        self._transport = make_transport(self.transport, self.codec, self.plan.numels, self.world_size)
        self._weights = self._device_weights(trainer)

    def _check_supported(self, trainer) -> None:
        if not self.lightning_module.automatic_optimization:
            raise ValueError("FederatedStrategy runs the rounds itself: use automatic optimization")
        if len(self.optimizers) != 1:
            raise ValueError(f"FederatedStrategy needs exactly one optimizer, got {len(self.optimizers)}")
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"accumulate_grad_batches={trainer.accumulate_grad_batches} is not supported: "
                "one step is one round of the protocol"
            )

    def _device_weights(self, trainer) -> dict[int, float]:
        if self.aggregation == "mean":
            return {d: 1.0 for d in range(self.num_devices)}
        sizes = getattr(trainer.datamodule, "device_sizes", None)
        if sizes is None:
            raise ValueError("aggregation='weighted' needs a datamodule with device_sizes() (shard sizes)")
        return dict(enumerate(float(size) for size in sizes()))

    # -------------------------------------------------------------------- rounds
    def _device_batches(self, batch) -> dict[int, Any]:
        hosted = self.hosted_devices
        if isinstance(batch, Mapping) and batch and all(isinstance(k, int) for k in batch):
            if sorted(batch) != hosted:
                raise ValueError(
                    f"this process hosts devices {hosted}, the batch holds devices {sorted(batch)}"
                )
            return {device: batch[device] for device in hosted}
        if len(hosted) == 1:
            return {hosted[0]: batch}
        raise ValueError(
            f"this process hosts devices {hosted}, but the train loader gives one batch per step; "
            "use FederatedDataModule, or yield {device: batch} for every hosted device"
        )

    @override
    def training_step(self, *args: Any, **kwargs: Any):
        """One round: every hosted device computes, steps its local parameters and uploads."""
        batch, rest = args[0], args[1:]
        module, optimizer = self.lightning_module, self.optimizers[0]
        losses, output = [], None
        for device, device_batch in self._device_batches(batch).items():
            with self.devices.hosting(device):
                module.zero_grad(set_to_none=True)  # the last round's download is still there
                output = super().training_step(device_batch, *rest, **kwargs)
                loss = output["loss"] if isinstance(output, Mapping) else output
                if loss is None:
                    raise ValueError(f"training_step returned no loss for device {device}")
                self.precision_plugin.backward(loss, module, optimizer)
                upload = self.codec.encode(self.plan.upload(module))
                self._transport.upload(device, upload, self._weights[device])
                self._step_local_parameters(module, optimizer)
            losses.append(loss.detach())
        self.devices.rest()
        mean = torch.stack(losses).mean()
        return {**output, "loss": mean} if isinstance(output, Mapping) else mean

    def _step_local_parameters(self, module, optimizer) -> None:
        """The device's optimizer step of what never leaves it; shared gradients are set aside."""
        for tensor in self.plan.shared:
            module.get_parameter(tensor.name).grad = None
        if self.plan.local_parameters:
            optimizer.step()
        module.zero_grad(set_to_none=True)

    @override
    def backward(self, closure_loss: torch.Tensor, optimizer, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The devices' backward passes ran in ``training_step``; here the server averages the
        uploads and every device receives the download (``on_after_backward`` sees it)."""
        module = self.lightning_module
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)
        self._exchange()
        return self.precision_plugin.post_backward(closure_loss, module)

    def _exchange(self) -> None:
        total, weight, uploads = self._transport.server_sum()
        average = [t / weight for t in total]
        download = self.codec.encode(average)
        self.ledger.record(uploads)
        self.ledger.record(Traffic.of_download(download, receivers=self.num_devices))
        self.ledger.record(
            Traffic(
                dense_values=2 * self.num_devices * self.plan.dense_numel,
                transport_bytes=self._transport.moved_bytes,
            )
        )
        self.plan.write_gradients(self.lightning_module, self.codec.decode(download, self.plan.numels))

    @override
    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any) -> Any:
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        self.ledger.end_step(epoch=self.lightning_module.current_epoch)
        return output

    # ---------------------------------------------------------------- evaluation
    # Every process evaluates a slice of the data with one model: device 0's, held by process 0.
    @override
    def on_validation_start(self) -> None:
        super().on_validation_start()
        self._evaluate_device_zero()

    @override
    def on_validation_end(self) -> None:
        if self.devices is not None:
            self.devices.rest()
        super().on_validation_end()

    def _evaluate_device_zero(self) -> None:
        if self.plan is None or self.world_size == 1 or not dist.is_initialized():
            return
        module = self.lightning_module
        names = self.plan.local_parameters + self.plan.local_buffers
        with torch.no_grad():
            for name in names:
                tensor = (
                    module.get_parameter(name)
                    if name in self.plan.local_parameters
                    else module.get_buffer(name)
                )
                dist.broadcast(tensor.data, src=0)

    # --------------------------------------------------------------- checkpoints
    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options=None) -> None:
        states = self.devices.state_dict() if self.devices is not None else {}
        checkpoint[CHECKPOINT_KEY] = {
            "ledger": self.ledger.state_dict(),
            "num_devices": self.num_devices,
            "processes": self.world_size,
            "share_log_sigma2": self.share_log_sigma2,
            "transport": self.transport,
            "devices": states if self.is_global_zero else None,
        }
        if not self.is_global_zero and states:
            side = {"global_step": checkpoint.get("global_step"), "devices": states}
            target = sidecar_path(filepath, self.global_rank)
            target.parent.mkdir(parents=True, exist_ok=True)  # process 0 may not have made it yet
            partial = target.with_name(target.name + ".partial")
            torch.save(side, partial)
            os.replace(partial, target)
        super().save_checkpoint(checkpoint, filepath, storage_options)

    @override
    def remove_checkpoint(self, filepath) -> None:
        super().remove_checkpoint(filepath)
        if self.is_global_zero:
            for rank in range(1, self.world_size):
                sidecar_path(filepath, rank).unlink(missing_ok=True)

    @override
    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only=False)
        federated = checkpoint.get(CHECKPOINT_KEY)
        if federated is None:
            return checkpoint
        if "devices" not in federated:
            raise ValueError(
                f"{checkpoint_path} was written before device states existed (lightning-fed < 0.2); "
                "it can start a run (--init-from) but not resume one"
            )
        self._check_same_federation(federated, checkpoint_path)
        self.ledger.load_state_dict(federated.get("ledger", {}))
        pool = dict(federated.get("devices") or {})
        for rank in range(1, federated.get("processes", 1)):
            side = torch.load(sidecar_path(checkpoint_path, rank), mmap=True, weights_only=False)
            if side.get("global_step") != checkpoint.get("global_step"):
                raise ValueError(
                    f"{sidecar_path(checkpoint_path, rank)} is of another step than {checkpoint_path}"
                )
            pool.update(side["devices"])
        self._resumed = {d: pool[d] for d in self.hosted_devices if d in pool}
        federated["devices"] = None  # the other devices' states are not kept
        return checkpoint

    def _check_same_federation(self, federated: dict, path) -> None:
        saved, now = federated.get("num_devices"), self._resolve_num_devices()
        if saved != now:
            raise ValueError(
                f"checkpoint {path} is of a {saved}-device federation; resume with --devices {saved}"
            )
        if federated.get("share_log_sigma2", False) != self.share_log_sigma2:
            flag = "with" if federated.get("share_log_sigma2") else "without"
            raise ValueError(
                f"checkpoint {path} was trained {flag} --share-log-sigma2; resume it the same way"
            )


StrategyRegistry.register(
    FederatedStrategy.strategy_name,
    FederatedStrategy,
    description="Federated learning: devices hosted by processes, masked payloads counted (lightning-fed)",
)
