"""``FederatedStrategy``: the Lightning adapter that hosts N devices and runs an algorithm's rounds."""

import os
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from pytorch_lightning.trainer.states import TrainerFn
from typing_extensions import override

from lightning_fed.communication import Codec, CommunicationLedger
from lightning_fed.federation import DeviceStates, SharingPlan, hosted_devices
from lightning_fed.federation.adapter import batch_source, check_supported, checked_ddp_options, round_output
from lightning_fed.federation.algorithm import FederatedAlgorithm, dense_traffic
from lightning_fed.federation.assembly import assemble
from lightning_fed.federation.attacks import Attack
from lightning_fed.federation.checkpoint import AtomicCheckpointIO
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.config import FederationConfig
from lightning_fed.federation.downlink import check_download
from lightning_fed.federation.host import RoundHost
from lightning_fed.federation.hosting import checked_device_store
from lightning_fed.federation.node_watch import NodeWatching, checked_node_timeout
from lightning_fed.federation.placement import checked_placement, share_states
from lightning_fed.federation.rounds import RoundSchedule
from lightning_fed.federation.saving import FederatedCheckpointing
from lightning_fed.federation.server_aggregation import ServerAggregation
from lightning_fed.federation.watchdog import ProcessWatching
from lightning_fed.privacy.dp_fedavg import stop_when_privacy_spent


class FederatedStrategy(RoundHost, ProcessWatching, NodeWatching, FederatedCheckpointing, DDPStrategy):
    """N federated devices hosted by P processes; each training step is one round of ``algorithm``.

    The round belongs to the algorithm (:mod:`lightning_fed.federation.algorithm`): by default the
    paper's protocol (:class:`~lightning_fed.federation.paper_protocol.PaperProtocol`: every device
    in every round, one step, the masked gradients averaged and sent back) when every device takes
    part with one local step and none fails, else the FedAvg family
    (:class:`~lightning_fed.federation.fedavg.FedAvg`: K sampled devices, H local steps, a server
    optimizer). The strategy hosts the devices (their states swapped in,
    :class:`~lightning_fed.federation.DeviceStates`), runs each device's forward and backward
    through Lightning's precision plugin, encodes and carries the uploads (``transport``:
    ``dense`` all-reduces sums across processes, ``sparse`` all-gathers the payloads), counts
    every message in the ledger, and checkpoints every device. Validation, test and checkpoints
    see device 0's model.

    Args:
        algorithm: a :class:`~lightning_fed.federation.algorithm.FederatedAlgorithm` to run
            instead of the built-in one (SCAFFOLD: ``examples/scaffold.py``).
        device_store: where the hosted devices' local parameters live: ``memory``, ``disk`` (a
            file per device in the run folder, hard-linked into each checkpoint) or ``auto``
            (disk beyond 2 GiB of them, e.g. 1,000 CifarNet devices of the paper's variant).
        placement: which process trains a round's device: ``hosted`` (the process hosting it),
            ``balanced`` (dealt so that every process has the same local steps to run, the
            devices' small states exchanged after the round) or ``auto`` (balanced for sampled
            rounds of devices without local state, across several processes;
            :mod:`~lightning_fed.federation.placement`).
        num_devices ... secagg_support: the federation's trajectory options, validated
            and documented by :class:`~lightning_fed.federation.config.FederationConfig` (stored
            whole in each checkpoint: a resume that changes one is refused).
        node_timeout: across nodes, the seconds a node may take to join, or stay silent, before
            every other node stops with one line naming it
            (:mod:`~lightning_fed.federation.node_watch`).
        **options: passed to ``DDPStrategy`` (process placement, backend, timeout).

    Example::

        >>> strategy = FederatedStrategy(num_devices=16)
        >>> strategy.transport, strategy.share_log_sigma2, strategy.ledger.total.values
        ('dense', False, 0)
        >>> fedavg = FederatedStrategy(num_devices=1000, devices_per_round=50, local_epochs=1)
        >>> fedavg.synchronous, fedavg.rounds_per_epoch(batches_per_epoch=2)
        (False, 20)
    """

    strategy_name = "federated"

    def __init__(
        self,
        num_devices: int | None = None,
        transport: str = "dense",
        share_log_sigma2: bool = False,
        codec: "Codec | str | list | None" = None,
        download_codec: "Codec | str | list | None" = None,
        error_feedback: bool = False,
        error_feedback_momentum: float = 0.0,
        download_error_feedback: bool = False,
        download: str = "model",
        aggregation: str = "mean",
        mask: bool = True,
        devices_per_round: int | None = None,
        sampling: str = "uniform",
        local_steps: int = 1,
        local_epochs: int | None = None,
        failure_rate: float = 0.0,
        server_optimizer: str | None = None,
        server_lr: float | None = None,
        server_momentum: float = 0.9,
        client_optimizer: str = "module",
        client_lr: float | None = None,
        proximal_mu: float = 0.0,
        upload_stages: list | None = None,
        download_stages: list | None = None,
        aggregator: str | None = None,
        enforce_mask: bool = False,
        attack: str | None = None,
        malicious_fraction: float = 0.0,
        worker_momentum: float = 0.0,
        dp_clip: float | None = None,
        dp_noise_multiplier: float | None = None,
        target_epsilon: float | None = None,
        dp_delta: float = 1e-5,
        dp_accountant: str | None = None,
        dp_target_quantile: float | None = None,
        dp_clip_lr: float = 0.2,
        dp_count_noise: float | None = None,
        secure_aggregation: bool = False,
        secagg_neighbours: int | None = None,
        secagg_threshold: int | None = None,
        secagg_range: float | None = None,
        secagg_late_failure_rate: float = 0.0,
        secagg_support: str = "dense",
        device_store: str = "auto",
        placement: str = "auto",
        algorithm: FederatedAlgorithm | None = None,
        node_timeout: float = 60.0,
        **options: Any,
    ) -> None:
        given = locals()  # LightningCLI reads this signature: every option is a named argument
        self.config = FederationConfig(
            **{name: given[name] for name in FederationConfig.__dataclass_fields__}
        )
        if options.get("checkpoint_io") is None:
            options["checkpoint_io"] = AtomicCheckpointIO()  # never a half-written checkpoint
        super().__init__(**checked_ddp_options(options))
        if self._ddp_kwargs:
            raise ValueError(
                "FederatedStrategy wraps no DistributedDataParallel, so "
                f"{', '.join(sorted(self._ddp_kwargs))} does not apply; "
                "pass only process placement, backend and timeout"
            )
        self.device_store = checked_device_store(device_store)
        self.placement = checked_placement(placement)  # resolved when a fit starts: placement_of_run
        self.node_timeout = checked_node_timeout(node_timeout)
        self.compression = Compression.of(self.config)
        # a download codec not given is decided at setup (lossless in FedAvg rounds)
        download_codec = self.compression if self.compression.download_given else None
        every = self.config.every_device()
        check_download(self.config.download, every, False, download_codec, self.config.share_log_sigma2)
        self._given_algorithm = algorithm
        self.algorithm: FederatedAlgorithm | None = algorithm
        self.num_devices = self.config.num_devices
        self.seed = 0
        self.ledger = CommunicationLedger()
        self.plan: SharingPlan | None = None
        self.devices: DeviceStates | None = None
        self.schedule: RoundSchedule | None = None
        self.transport_of_round = None
        self.client_optimizer = None
        self.weights: dict[int, float] = {}
        self.server_aggregation: ServerAggregation | None = None
        self.attack: Attack | None = None
        self._round = self._trainable = self._non_finite = self._step_args = self._public_keeps = None

    transport = property(lambda self: self.config.transport)
    share_log_sigma2 = property(lambda self: self.config.share_log_sigma2)
    devices_per_round = property(lambda self: self.config.devices_per_round)
    codec = property(lambda self: self.compression.codec, doc="The uploads' codec.")
    download_codec = property(lambda self: self.compression.download_codec, doc="The server's codec.")
    downlink = property(lambda self: getattr(self.algorithm, "downlink", None))

    @property
    def synchronous(self) -> bool:
        """The paper's protocol: every device, every round, one step, nobody failing."""
        return self.config.synchronous(self.num_devices)

    @property
    def hosted_devices(self) -> list[int]:
        """The federated devices this process hosts (contiguous, N / P of them)."""
        return hosted_devices(self._resolve_num_devices(), self.world_size, self.global_rank)

    @property
    def held_devices(self) -> list[int]:
        """The devices whose state (and shard stream) this process holds: its hosted ones, or every
        device when a round's devices are dealt across processes (``placement``)."""
        if self.placement_of_run == "balanced":
            return list(range(self._resolve_num_devices()))
        return self.hosted_devices

    def _resolve_num_devices(self) -> int:
        module = self.lightning_module
        datamodule = getattr(getattr(module, "_trainer", None), "datamodule", None) if module else None
        from_data = getattr(datamodule, "num_devices", None)
        if self.num_devices is not None and from_data is not None and from_data != self.num_devices:
            raise ValueError(
                f"FederatedStrategy(num_devices={self.num_devices}), but the datamodule has {from_data}"
            )
        self.num_devices = self.num_devices or from_data or self.world_size
        return self.num_devices

    def rounds_per_epoch(self, batches_per_epoch: int) -> int:
        """Rounds in an epoch: as many as take every training sample once on average."""
        num_devices, config = self.num_devices or self._resolve_num_devices(), self.config
        steps = config.local_steps if config.local_epochs is None else config.local_epochs * batches_per_epoch
        per_round = config.devices_per_round or num_devices
        return RoundSchedule(num_devices, per_round).rounds_per_epoch(batches_per_epoch, steps)

    # -------------------------------------------------------------------- set-up
    @override
    def configure_ddp(self) -> None:
        # No DistributedDataParallel wrapper: the rounds are the gradient synchronisation. Every
        # process starts from process 0's model (what DDP's wrapper would have broadcast).
        module = self.lightning_module
        if self.world_size > 1:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
        self.plan = SharingPlan(module, self.config.share_log_sigma2, self.config.mask)

    @override
    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.watch_processes()
        if trainer.state.fn != TrainerFn.FITTING:
            return
        check_supported(self, trainer)
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**63)) % 2**63
        assemble(self, trainer)

    # -------------------------------------------------------------------- rounds
    @override
    def training_step(self, *args: Any, **kwargs: Any):
        """One round: the algorithm's devices hosted here train and upload."""
        batch, rest = args[0], args[1:]
        self._non_finite, self._step_args = None, (rest, kwargs)
        step = self.lightning_module.trainer.global_step
        batch_index = args[1] if len(args) > 1 else kwargs.get("batch_idx", 0)
        source = batch_source(batch, self.algorithm, self.held_devices)
        self._round = this_round = self.algorithm.configure_round(self, step)
        start = self.algorithm.send_model(self, this_round)
        losses, output = [], None
        self.begin_round(this_round, step)
        trained = self.devices_of_round(this_round, source)
        for device in trained:
            with self._failures_named(device), self.devices.hosting(device) as state:
                batches = self.algorithm.device_batches(self, source, device, state, batch_index)
                if self.attack is not None:
                    batches = self.attack.poisoned(device, batches)
                result = self.algorithm.client_update(
                    self, device, [self.batch_to_device(b) for b in batches], start
                )
                self.upload(device, result)
            self.algorithm.after_client(self, start)
            losses.append(result.loss.detach())
            output = result.output
        self.devices.rest()
        if self.placement_of_run == "balanced":
            share_states(self, trained)
        self._stop_if_non_finite()
        return round_output(output, losses, self.root_device)

    @override
    def backward(self, closure_loss: torch.Tensor, optimizer, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The devices' backward passes ran in ``training_step``; here the server aggregates the
        uploads and writes its gradient (``on_after_backward`` sees it)."""
        module = self.lightning_module
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)
        # the uploads, read and counted by the transport; their mean or a robust aggregate
        average, weight = self.server_aggregation.average(
            self.transport_of_round, self._public_keeps, step=module.trainer.global_step
        )
        this_round = self._round
        self.ledger.record(
            dense_traffic(self.plan.dense_numel, len(this_round.sampled), len(this_round.reporting))
        )
        gradient = self.algorithm.aggregate(self, this_round, average, weight)
        if gradient is None:  # every sampled device failed: the model stays as it is
            self.clear_gradients()
        else:
            self.plan.write_gradients(module, gradient)
        return self.precision_plugin.post_backward(closure_loss, module)

    @override
    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any) -> Any:
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        self.ledger.end_step(epoch=self.lightning_module.current_epoch)
        stop_when_privacy_spent(self.server_aggregation.privacy, self.lightning_module.trainer)
        return output

    # ---------------------------------------------------------------- evaluation
    # Every process evaluates a slice of the data with one model: device 0's, held by process 0.
    @override
    def on_validation_start(self) -> None:
        super().on_validation_start()
        if self.plan is None or self.world_size == 1 or not dist.is_initialized():
            return
        module = self.lightning_module
        with torch.no_grad():
            for name in self.plan.local_parameters:
                dist.broadcast(module.get_parameter(name).data, src=0)
            for name in self.plan.local_buffers:
                dist.broadcast(module.get_buffer(name).data, src=0)

    @override
    def on_validation_end(self) -> None:
        if self.devices is not None:
            self.devices.rest()
        super().on_validation_end()


StrategyRegistry.register(
    FederatedStrategy.strategy_name,
    FederatedStrategy,
    description="Federated learning: devices hosted by processes, masked payloads counted (lightning-fed)",
)
