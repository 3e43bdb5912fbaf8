"""``FederatedStrategy``: DDP whose gradient synchronisation is the paper's federated protocol."""

from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from torch.nn.parallel import DistributedDataParallel
from typing_extensions import override

from lightning_fed.comm_hook import TRANSPORTS, FederatedHookState, federated_comm_hook
from lightning_fed.communication import CommunicationLedger
from lightning_fed.nn import variational_layers

CHECKPOINT_KEY = "federated"


class FederatedStrategy(DDPStrategy):
    """One process per device; masked gradients averaged by a counting communication hook.

    The hook is registered on CPU (gloo) as well as GPU (NCCL). In the paper's variant (the
    default) every ``log_sigma2`` stays local to its device: DDP ignores it, and checkpoints
    hold every device's copy (and its optimizer moments) so that a resume is exact. Validation and
    test evaluate one model on all ranks, device 0's, which is also the one checkpointed.

    Args:
        transport: ``"dense"`` (all-reduce, counted as sparse) or ``"sparse"`` (indices + values).
        share_log_sigma2: Algorithm 1 proper: synchronise the (masked) log_sigma2 gradients too.
        **kwargs: passed to ``DDPStrategy`` (and from it to ``DistributedDataParallel``).

    Example::

        >>> strategy = FederatedStrategy(transport="sparse")
        >>> strategy.transport, strategy.share_log_sigma2, strategy.ledger.total.values
        ('sparse', False, 0)
    """

    strategy_name = "federated"

    def __init__(self, transport: str = "dense", share_log_sigma2: bool = False, **kwargs: Any) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        kwargs.setdefault("broadcast_buffers", False)  # batch-norm statistics stay local (as in FedBN)
        super().__init__(**kwargs)
        self.transport = transport
        self.share_log_sigma2 = share_log_sigma2
        self.ledger = CommunicationLedger()
        self._resumed_local: dict | None = None  # this device's local state, read on resume
        self._gathered_local: list[dict] | None = None  # every device's local state, for the next save
        self._stashed_local: list[torch.Tensor] | None = None  # own log_sigma2 while device 0's is evaluated

    # ------------------------------------------------------------ DDP set-up
    def local_parameter_names(self, module: torch.nn.Module) -> list[str]:
        """Names of the parameters that never leave their device (log_sigma2 in the variant)."""
        if self.share_log_sigma2:
            return []
        return [f"{name}.log_sigma2" for name, _ in variational_layers(module)]

    @override
    def _setup_model(self, model: torch.nn.Module) -> DistributedDataParallel:
        local = self.local_parameter_names(model)
        if local:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, local)
        return super()._setup_model(model)

    @override
    def _register_ddp_hooks(self) -> None:
        assert isinstance(self.model, DistributedDataParallel)
        shared_log_sigma2 = (
            {id(layer.log_sigma2) for _, layer in variational_layers(self.lightning_module)}
            if self.share_log_sigma2
            else set()
        )
        state = FederatedHookState(self.ledger, self.transport, None, shared_log_sigma2)
        self.model.register_comm_hook(state=state, hook=federated_comm_hook)

    @override
    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any) -> Any:
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        self.ledger.end_step(epoch=self.lightning_module.current_epoch)
        return output

    # ------------------------------------------------------------ evaluation
    # Every rank evaluates a slice of the data, so all must evaluate one model. In the variant that
    # is device 0's (theta with device 0's log_sigma2): the model checkpointed and exported too.
    @override
    def on_validation_start(self) -> None:
        super().on_validation_start()
        self._evaluate_device_zero_model()

    @override
    def on_validation_end(self) -> None:
        self._restore_local_parameters()
        super().on_validation_end()

    @override
    def on_test_start(self) -> None:
        super().on_test_start()
        self._evaluate_device_zero_model()

    @override
    def on_test_end(self) -> None:
        self._restore_local_parameters()
        super().on_test_end()

    def _evaluate_device_zero_model(self) -> None:
        names = self.local_parameter_names(self.lightning_module)
        if not names or not (dist.is_available() and dist.is_initialized()):
            return
        params = [self.lightning_module.get_parameter(name) for name in names]
        self._stashed_local = [param.detach().clone() for param in params]
        with torch.no_grad():
            for param in params:
                dist.broadcast(param.data, src=0)

    def _restore_local_parameters(self) -> None:
        if self._stashed_local is None:
            return
        names = self.local_parameter_names(self.lightning_module)
        with torch.no_grad():
            for name, value in zip(names, self._stashed_local, strict=True):
                self.lightning_module.get_parameter(name).copy_(value)
        self._stashed_local = None

    # ----------------------------------------------------------- checkpoints
    def _local_state(self) -> dict:
        """This device's local parameters and their optimizer state, on the CPU."""
        module = self.lightning_module
        names = self.local_parameter_names(module)
        params = {name: module.get_parameter(name) for name in names}
        optimizer_state = {}
        if self.optimizers:  # the optimizer moments of the local parameters
            state = self.optimizers[0].state
            for name, param in params.items():
                if param in state:
                    optimizer_state[name] = {k: v.detach().cpu().clone() for k, v in state[param].items()}
        return {
            "params": {n: p.detach().cpu().clone() for n, p in params.items()},
            "optimizer": optimizer_state,
            "rng": _rng_state(self.root_device),
        }

    @override
    def lightning_module_state_dict(self) -> dict[str, Any]:
        # Runs on every rank while a checkpoint is dumped: gather the local state to rank 0.
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * self.world_size if self.is_global_zero else None
            dist.gather_object(self._local_state(), gathered, dst=0)
            self._gathered_local = gathered
        else:
            self._gathered_local = None
        return super().lightning_module_state_dict()

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options=None) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "ledger": self.ledger.state_dict(),
            "transport": self.transport,
            "share_log_sigma2": self.share_log_sigma2,
            "local": self._gathered_local,
        }
        self._gathered_local = None  # N model-sized copies on rank 0: not kept until the next save
        super().save_checkpoint(checkpoint, filepath, storage_options)

    @override
    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only=False)
        federated = checkpoint.get(CHECKPOINT_KEY)
        if federated is not None:
            self.ledger.load_state_dict(federated.get("ledger", {}))
            local = federated.get("local")
            if local is not None and len(local) != self.world_size:
                if any(entry["params"] for entry in local):
                    raise ValueError(
                        f"checkpoint holds {len(local)} devices' local log_sigma2, this run has "
                        f"{self.world_size} devices; resume with --devices {len(local)}"
                    )
                local = None  # nothing local but generator states: a new federation size starts afresh
            # Keep this device's entry only: every rank loads the whole checkpoint, and the other
            # devices' log_sigma2 and moments (N - 1 model-sized copies) would stay until training.
            self._resumed_local = None if local is None else local[self.global_rank]
            federated["local"] = None
        return checkpoint

    @override
    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        super().load_model_state_dict(checkpoint, strict=strict)
        if self._resumed_local is not None:
            module = self.lightning_module
            with torch.no_grad():
                for name, value in self._resumed_local["params"].items():
                    module.get_parameter(name).copy_(value)

    @override
    def load_optimizer_state_dict(self, checkpoint) -> None:
        super().load_optimizer_state_dict(checkpoint)
        if self._resumed_local is None:
            return
        module, state = self.lightning_module, self.optimizers[0].state
        for name, entry in self._resumed_local["optimizer"].items():
            param = module.get_parameter(name)
            state[param] = {k: v.to(param.device) if v.dim() else v for k, v in entry.items()}

    @override
    def on_train_start(self) -> None:
        # After the sanity check (which draws from the generators), so that the resumed run draws
        # the same dropout noise and loader seeds as one that never stopped.
        super().on_train_start()
        if self._resumed_local is not None:
            _set_rng_state(self._resumed_local.get("rng"), self.root_device)
            self._resumed_local = None


def _rng_state(device: torch.device) -> dict:
    """This process's torch generator states (CPU, and the accelerator's when on CUDA)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict | None, device: torch.device) -> None:
    if not state:
        return
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


StrategyRegistry.register(
    FederatedStrategy.strategy_name,
    FederatedStrategy,
    description="Federated learning with masked, counted gradient averaging (lightning-fed)",
)
