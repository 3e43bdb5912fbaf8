"""``FederatedStrategy``: N federated devices hosted by P processes, every exchange a counted payload."""

import os
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import _sync_module_states
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from pytorch_lightning.trainer.states import TrainerFn
from typing_extensions import override

from lightning_fed.communication import Codec, CommunicationLedger, Traffic
from lightning_fed.federation import TRANSPORTS, DeviceStates, SharingPlan, hosted_devices, make_transport
from lightning_fed.federation.checkpoint import (
    CHECKPOINT_KEY,
    AtomicCheckpointIO,
    files_of,
    read_sidecar,
    rows_path,
    sidecar_path,
)
from lightning_fed.federation.compression import DOWNLOAD, UPLOAD, Compression
from lightning_fed.federation.device_rows import remove_saved
from lightning_fed.federation.downlink import ModelDownlink, check_download
from lightning_fed.federation.files import write_aside
from lightning_fed.federation.health import DeviceFailed, NonFiniteError, first_non_finite, non_finite
from lightning_fed.federation.rounds import SAMPLINGS, Round, RoundSchedule, check_failure_rate
from lightning_fed.federation.server_optimizers import SERVER_OPTIMIZERS, server_optimizer
from lightning_fed.federation.watchdog import ProcessWatchdog, die_with_parent

AGGREGATIONS = ("mean", "weighted")
CLIENT_OPTIMIZERS = ("module", "sgd")
DEVICE_STORES = ("auto", "memory", "disk")
DISK_STORE_ABOVE_BYTES = 2 * 2**30  # "auto": local parameters of the hosted devices beyond this go to disk
_NOT_TAKEN = ("ddp_comm_hook", "ddp_comm_state", "ddp_comm_wrapper", "model_averaging_period")


class FederatedStrategy(DDPStrategy):
    """N federated devices hosted by P processes, inside Lightning's DDP machinery.

    Each training step is one round. In the paper's protocol (the default: every device in every
    round, one local step) every device takes its next batch of its own shard, computes the
    gradients of its ELBO as itself (its local log_sigma2, batch-norm statistics, optimizer state
    and random stream swapped in, :class:`~lightning_fed.federation.DeviceStates`), steps its
    local parameters, and uploads its masked shared gradients as a payload of its ``codec``. The
    server averages the decoded uploads (over N, or weighted by shard size), encodes the average
    as the download, and every device steps theta with what it decodes from it (the module's
    optimizer, Adam in the paper).

    With ``devices_per_round`` K < N, ``local_steps`` H > 1 (or ``local_epochs``) or a
    ``failure_rate``, a round is the FedAvg family's: the server samples K devices
    (:class:`~lightning_fed.federation.rounds.RoundSchedule`) and sends them the model (a payload,
    counted once per sampled device); each reporting device trains H steps with the client
    optimizer from a fresh state and uploads its masked model delta (H = 1: its masked gradient);
    the server averages them and steps with ``server_optimizer`` (FedAvg, FedAvgM, FedAdam,
    FedYogi, FedAdagrad; by default the module's optimizer for gradients and FedAvg for deltas).

    The ledger counts every payload's bytes; ``transport`` says how payloads meet across
    processes (``dense``: sums all-reduced; ``sparse``: payloads all-gathered). Validation, test
    and checkpoints see device 0's model; a checkpoint holds every device's state, each process
    writing its own devices'.

    Args:
        num_devices: N; by default the datamodule's ``num_devices``, else the number of processes.
        transport: ``"dense"`` or ``"sparse"`` (how messages cross processes; same model).
        share_log_sigma2: Algorithm 1 proper: log_sigma2 is shared (and masked) too.
        codec: the uploads' :class:`~lightning_fed.communication.Codec`, or a spec for
            :func:`~lightning_fed.communication.make_codec` (``"topk:0.01+qsgd:8"``, a list of
            stages); by default lossless float32 values at the cheapest positions.
        download_codec: the server's messages' codec. By default, in the paper's protocol,
            ``codec``'s value coder without its filters (the average of top-k uploads goes back as
            sparse as their union); in sampled rounds, whose download is the model itself, lossless.
        error_feedback: each device keeps what the upload codec dropped and adds it to its next
            upload (:mod:`lightning_fed.federation.error_feedback`); needs a lossy codec.
        error_feedback_momentum: DGC's momentum correction: each device accumulates its own
            momentum of the updates with this factor, and clears it where it sent (0: off; pair it
            with ``server_optimizer="fedavg"``, as the momentum is then on the devices).
        download_error_feedback: the server does the same for its download (the paper's protocol,
            and ``download="delta"``: in sampled rounds the download is the model itself).
        download: in FedAvg-family rounds, ``"model"`` (the model itself) or ``"delta"`` (its
            change since the last round, zero where no update moved a weight; needs every device
            in every round; :mod:`lightning_fed.federation.downlink`).
        aggregation: ``"mean"`` (the paper: over N) or ``"weighted"`` (by the datamodule's shard sizes).
        mask: mask theta by ``M(alpha)`` before it is sent.
        devices_per_round: K, the devices sampled per round (default: all N).
        sampling: ``"uniform"`` or ``"weighted"`` (by shard size) choice of the K devices.
        local_steps: H, a sampled device's local steps per round (1: it sends its gradient).
        local_epochs: instead of H, passes over its own shard (its last batch may be short).
        failure_rate: chance that a sampled device fails to report (it sent nothing).
        server_optimizer: one of ``fedavg``, ``fedavgm``, ``fedadam``, ``fedyogi``, ``fedadagrad``.
        server_lr: its learning rate (default 1 for fedavg/fedavgm, 0.01 for the adaptive ones).
        server_momentum: fedavgm's momentum.
        client_optimizer: ``"module"`` (the LightningModule's, fresh each round) or ``"sgd"``.
        client_lr: the client SGD's learning rate (default: the module's).
        proximal_mu: FedProx's ``mu``: each local step adds ``mu * (w - w_round_start)``.
        device_store: where the hosted devices' local parameters live: ``memory``, ``disk`` (a
            file per device in the run folder, read per device, hard-linked into each checkpoint) or
            ``auto`` (disk beyond 2 GiB of them, e.g. 1,000 CifarNet devices of the paper's variant).
        **kwargs: passed to ``DDPStrategy`` (process placement, backend, timeout).

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
        device_store: str = "auto",
        **kwargs: Any,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        for name, value in (
            ("num_devices", num_devices), ("devices_per_round", devices_per_round),
            ("local_epochs", local_epochs), ("local_steps", local_steps),
        ):  # fmt: skip
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if num_devices is not None and devices_per_round is not None and devices_per_round > num_devices:
            raise ValueError(f"devices_per_round={devices_per_round} exceeds num_devices={num_devices}")
        if local_epochs is not None and local_steps != 1:
            raise ValueError("give local_steps or local_epochs, not both")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if server_optimizer is not None and server_optimizer not in SERVER_OPTIMIZERS:
            raise ValueError(
                f"server_optimizer must be one of {', '.join(SERVER_OPTIMIZERS)}, got {server_optimizer!r}"
            )
        if client_optimizer not in CLIENT_OPTIMIZERS:
            raise ValueError(
                f"client_optimizer must be one of {', '.join(CLIENT_OPTIMIZERS)}, got {client_optimizer!r}"
            )
        for name, value in (("server_lr", server_lr), ("client_lr", client_lr)):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (isinstance(proximal_mu, (int, float)) and 0 <= proximal_mu < float("inf")):
            raise ValueError(f"proximal_mu must be a finite number >= 0, got {proximal_mu!r}")
        if not 0 <= server_momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum!r}")
        failure_rate = check_failure_rate(failure_rate)
        if device_store not in DEVICE_STORES:
            raise ValueError(f"device_store must be one of {', '.join(DEVICE_STORES)}, got {device_store!r}")
        for key in _NOT_TAKEN:
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"FederatedStrategy exchanges messages itself and takes no {key}; "
                    "pass a codec (lightning_fed.communication.Codec) instead"
                )
        kwargs = _without_ddp_defaults(kwargs)  # LightningCLI passes every one of them, as defaults
        if kwargs.get("checkpoint_io") is None:
            kwargs["checkpoint_io"] = AtomicCheckpointIO()  # never a half-written checkpoint
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
        self.compression = Compression(
            codec, download_codec, error_feedback, error_feedback_momentum, download_error_feedback
        )
        self.downlink = ModelDownlink(download)  # an unknown kind is an error here
        every = None if num_devices is None else devices_per_round in (None, num_devices)
        # a download codec not given is decided at setup (lossless in FedAvg rounds)
        check_download(download, every, False, self.compression if self.compression.download_given else None)
        self._server_model: list[torch.Tensor] | None = None
        self._round_masks: dict[str, torch.Tensor] | None = None  # of the update being sent (error feedback)
        self._seed = 0
        self.aggregation = aggregation
        self.mask = mask
        self.devices_per_round = devices_per_round
        self.sampling = sampling
        self.local_steps = local_steps
        self.local_epochs = local_epochs
        self.failure_rate = failure_rate
        self.server_optimizer_name = server_optimizer
        self.server_lr = server_lr
        self.server_momentum = server_momentum
        self.client_optimizer_name = client_optimizer
        self.client_lr = client_lr
        self.proximal_mu = float(proximal_mu)
        self.device_store = device_store
        self._resumed_path = self._resumed_step = self._resumed_layout = None
        self._non_finite: tuple[int, str] | None = None
        self._watchdog: ProcessWatchdog | None = None  # in the launching process of each node
        self._watched = False
        self.schedule: RoundSchedule | None = None
        self._round: Round | None = None
        self._trainable: list[torch.nn.Parameter] | None = None
        self._client_optimizer = None
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

    @property
    def sends_deltas(self) -> bool:
        """Devices train several local steps and send model deltas (else one step, its gradient)."""
        return self.local_steps > 1 or self.local_epochs is not None

    @property
    def synchronous(self) -> bool:
        """The paper's protocol: every device, every round, one step, nobody failing."""
        every = self.devices_per_round is None or self.devices_per_round == self.num_devices
        return every and not self.sends_deltas and self.failure_rate == 0

    def rounds_per_epoch(self, batches_per_epoch: int) -> int:
        """Rounds in an epoch: as many as take every training sample once on average."""
        num_devices = self.num_devices or self._resolve_num_devices()
        per_round = self.devices_per_round or num_devices
        steps = self.local_steps if self.local_epochs is None else self.local_epochs * batches_per_epoch
        return RoundSchedule(num_devices, per_round).rounds_per_epoch(batches_per_epoch, steps)

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
        self._watch_processes()
        if trainer.state.fn != TrainerFn.FITTING:
            return
        self._check_supported(trainer)
        module = self.lightning_module
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**63))
        self._seed = seed % 2**63
        self._resolve_num_devices()
        if not self.synchronous:
            self.compression.for_sampled_rounds(download_delta=self.downlink.download == "delta")
        every = self.devices_per_round in (None, self.num_devices)
        check_download(self.downlink.download, every, self.synchronous, self.compression)
        self._weights = self._device_weights(trainer)
        self.schedule = self._round_schedule(trainer, seed)
        self._set_up_optimizers()
        self.devices = DeviceStates(
            module, self.plan, self.hosted_devices, seed, self._client_optimizer,
            keep_optimizer_state=self.synchronous, rows_path=self._rows_path(trainer), rank=self.global_rank,
            feedback=self.compression.feedback_kinds,
        )  # fmt: skip
        if self._resumed is not None:
            path, step = self._resumed_path, self._resumed_step
            self.devices.load_state_dict(
                self._resumed,
                rows_file=lambda rank: rows_path(path, rank, step),
                rows_layout=self._resumed_layout,
            )
            self._resumed = None
        self._transport = make_transport(self.transport, self.codec, self.plan.numels, self.world_size)

    def _watch_processes(self) -> None:
        """A lost device process stops the run, named (:mod:`lightning_fed.federation.watchdog`)."""
        if self.world_size == 1 or self._watched:
            return
        self._watched = True
        started = getattr(self.launcher, "procs", None)  # the device processes this one launched
        if self.local_rank == 0 and started:
            first = self.node_rank * self.num_processes + 1
            processes = {first + i: process for i, process in enumerate(started)}
            self._watchdog = ProcessWatchdog(processes, self._describe_rank, grace=3.0)
            self._watchdog.start()
        elif self.local_rank != 0:
            die_with_parent()  # watched by its launcher, and gone with it

    @override
    def on_exception(self, exception: BaseException) -> None:
        """A collective that failed because a device process died: say which, in one line, and stop."""
        super().on_exception(exception)
        ours = (NonFiniteError, DeviceFailed, KeyboardInterrupt)
        if self._watchdog is not None and not isinstance(exception, ours):
            message = self._watchdog.lost_within(seconds=2.0)
            if message is not None:
                self._watchdog.stop_run(message)

    def _describe_rank(self, rank: int) -> str:
        devices = hosted_devices(self._resolve_num_devices(), self.world_size, rank)
        return f"device {devices[0]}" if len(devices) == 1 else f"devices {devices[0]}-{devices[-1]}"

    def _rows_path(self, trainer):
        """The file of the hosted devices' local parameters, or None to keep them in memory."""
        if self.device_store == "memory":
            return None
        module = self.lightning_module
        per_device = sum(module.get_parameter(n).numel() * 4 for n in self.plan.local_parameters)
        per_device += len(self.compression.feedback_kinds) * 4 * sum(self.plan.numels)  # error feedback
        if self.device_store == "auto" and per_device * len(self.hosted_devices) <= DISK_STORE_ABOVE_BYTES:
            return None
        return Path(trainer.default_root_dir) / "device-states" / f"process-{self.global_rank}"

    def _round_schedule(self, trainer, seed: int) -> RoundSchedule:
        weights = None
        if self.sampling == "weighted":
            sizes = getattr(trainer.datamodule, "device_sizes", None)
            if sizes is None:
                raise ValueError("sampling='weighted' needs a datamodule with device_sizes() (shard sizes)")
            weights = sizes()
        if self.devices_per_round is not None and self.devices_per_round > self.num_devices:
            raise ValueError(
                f"devices_per_round={self.devices_per_round} exceeds the federation's "
                f"{self.num_devices} devices"
            )
        return RoundSchedule(
            self.num_devices, self.devices_per_round, self.sampling, self.failure_rate, seed, weights
        )

    def _set_up_optimizers(self) -> None:
        """The module's optimizer is the devices' (client) one; the server's steps the shared
        parameters. They are the same optimizer in the paper's protocol (Adam on the average)."""
        module_optimizer = self.optimizers[0]
        self._client_optimizer = module_optimizer
        if self.client_optimizer_name == "sgd":
            groups = module_optimizer.param_groups
            self._client_optimizer = torch.optim.SGD(
                [{"params": g["params"], "lr": self.client_lr or g["lr"]} for g in groups]
            )
        name = self.server_optimizer_name or ("fedavg" if self.sends_deltas else None)
        if name is None:
            return
        shared = [self.lightning_module.get_parameter(t.name) for t in self.plan.shared]
        self.optimizers = [server_optimizer(name, shared, self.server_lr, self.server_momentum)]

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
        """One round: the round's devices in this process compute, step their local parameters and upload."""
        batch, rest = args[0], args[1:]
        self._non_finite = None
        if not callable(getattr(batch, "batch", None)):  # a loader of {device: batch}
            output = self._synchronous_round(self._device_batches(batch), rest, kwargs)
        elif self.synchronous:
            step = self.lightning_module.current_epoch * batch.batches_per_pass(self.hosted_devices[0])
            step += args[1] if len(args) > 1 else kwargs.get("batch_idx", 0)
            batches = {d: self.batch_to_device(batch.batch(d, step)) for d in self.hosted_devices}
            output = self._synchronous_round(batches, rest, kwargs)
        else:
            output = self._sampled_round(batch, rest, kwargs)
        self._stop_if_non_finite()
        return output

    @contextmanager
    def _failures_named(self, device: int):
        """An exception of ``device``'s computation becomes a :class:`DeviceFailed` that names it."""
        try:
            yield
        except (DeviceFailed, NonFiniteError):
            raise
        except Exception as error:
            raise DeviceFailed(device, self.lightning_module.trainer.global_step, error) from error

    def _watch(self, device: int, loss: torch.Tensor, update: list[torch.Tensor]) -> None:
        """Note the step's first device whose loss or update is not finite."""
        if self._non_finite is None and (kind := non_finite(loss, update)) is not None:
            self._non_finite = (device, kind)

    def _stop_if_non_finite(self) -> None:
        found = first_non_finite(self._non_finite, self.num_devices, self.root_device)
        if found is not None:
            trainer = self.lightning_module.trainer
            raise NonFiniteError(
                f"device {found[0]}'s {found[1]} is not finite (NaN or inf) at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}); the server did not apply the step"
            )

    def _synchronous_round(self, batches: dict[int, Any], rest, kwargs):
        module = self.lightning_module
        losses, output = [], None
        for device, device_batch in batches.items():
            with self._failures_named(device), self.devices.hosting(device):
                output, loss = self._device_step(device, device_batch, rest, kwargs)
                self._round_masks = self.plan.masks(module) if self.compression.error_feedback else None
                update = self.plan.upload(module, self._round_masks)  # error feedback needs the masks too
                self._watch(device, loss, update)
                self._transport.upload(device, self._encode_upload(device, update), self._weights[device])
                self._step_local_parameters(module)
            losses.append(loss.detach())
        self.devices.rest()
        return self._round_output(output, losses)

    def _device_step(self, device: int, batch, rest, kwargs):
        """One local step's forward and backward of ``device`` (hosted): the module's output and loss."""
        module = self.lightning_module
        self._clear_gradients()  # the last round's download is still there
        output = super().training_step(batch, *rest, **kwargs)
        loss = output["loss"] if isinstance(output, Mapping) else output
        if loss is None:
            raise ValueError(f"training_step returned no loss for device {device}")
        self.precision_plugin.backward(loss, module, self._client_optimizer)
        return output, loss

    def _clear_gradients(self) -> None:
        """``zero_grad(set_to_none=True)`` of the trained parameters, without walking every submodule."""
        if self._trainable is None:
            self._trainable = [p for p in self.lightning_module.parameters() if p.requires_grad]
        for param in self._trainable:
            param.grad = None

    def _round_output(self, output, losses: list[torch.Tensor]):
        """The round's loss for Lightning: the mean over this process's reporting devices."""
        if not losses:  # nobody here reported; the server step still runs, with the others' uploads
            mean = torch.zeros((), device=self.root_device)
            return {"loss": mean} if output is None or isinstance(output, Mapping) else mean
        mean = torch.stack(losses).mean()
        return {**output, "loss": mean} if isinstance(output, Mapping) else mean

    def _sampled_round(self, streams, rest, kwargs):
        """A FedAvg-family round: sampled devices receive the model, train locally, send updates."""
        module = self.lightning_module
        this_round = self.schedule.round(self.lightning_module.trainer.global_step)
        start = self._send_model(this_round)
        hosted = set(self.hosted_devices)
        losses, output = [], None
        for device in (d for d in this_round.reporting if d in hosted):
            with self._failures_named(device), self.devices.hosting(device) as state:
                steps = self._local_step_count(streams, device)
                batches = [self.batch_to_device(streams.batch(device, state.drawn + i)) for i in range(steps)]
                state.drawn += steps
                output, loss, update = self._local_update(device, batches, start, rest, kwargs)
                self._watch(device, loss, update)
                self._transport.upload(device, self._encode_upload(device, update), self._weights[device])
            self.plan.write_parameters(module, start)  # the next device starts from the round's model
            losses.append(loss.detach())
        self.devices.rest()
        self._round = this_round
        return self._round_output(output, losses)

    @property
    def codec(self) -> Codec:
        """The uploads' codec (``compression.codec``)."""
        return self.compression.codec

    @property
    def download_codec(self) -> Codec:
        """The server's messages' codec (``compression.download_codec``)."""
        return self.compression.download_codec

    def _encode_upload(self, device: int, update: list[torch.Tensor]):
        """``device``'s payload of ``update`` (with error feedback, plus the device's residual)."""
        step = self.lightning_module.trainer.global_step
        feedback = self.compression.error_feedback
        keeps = self.plan.keeps(self._round_masks) if feedback else None  # what ``update`` was masked with
        extra = self.devices.states[device].extra if feedback else {}
        seed = (self._seed, UPLOAD, device, step)
        return self.compression.encode_upload(update, extra, keeps, step=step, seed=seed)

    def _local_step_count(self, streams, device: int) -> int:
        if self.local_epochs is None:
            return self.local_steps
        return self.local_epochs * streams.batches_per_pass(device)

    def _send_model(self, this_round: Round) -> list[torch.Tensor]:
        """The server's model as the round's devices receive it: encoded, counted per receiver, decoded."""
        module = self.lightning_module
        step = module.trainer.global_step
        exact = self.plan.values(module)
        seed = (self._seed, DOWNLOAD, step)
        payload, received = self.downlink.send(
            exact, self.compression, self.plan.numels, step=step, seed=seed
        )
        self.ledger.record(Traffic.of_download(payload, receivers=len(this_round.sampled)))
        lossy = self.download_codec.lossy or self.downlink.download == "delta"
        self._server_model = exact if lossy else None  # the server steps its own
        self.plan.write_parameters(module, received)
        return [t.to(self.root_device) for t in received]

    def _local_update(self, device: int, batches: list, start: list[torch.Tensor], rest, kwargs):
        """``device``'s local training from the round's model: its output, last loss and masked update."""
        module = self.lightning_module
        self._round_masks = None
        if self.sends_deltas:
            masks = self.plan.masks(module)  # M(alpha) as the round starts: pruned stays unsent
            self._round_masks = masks
            for group in self._client_optimizer.param_groups:
                for param in group["params"]:
                    self._client_optimizer.state.pop(param, None)
        output = loss = None
        for batch in batches:
            output, loss = self._device_step(device, batch, rest, kwargs)
            if not self.sends_deltas:
                self._round_masks = self.plan.masks(module) if self.compression.error_feedback else None
                update = self.plan.upload(module, self._round_masks)
                self._step_local_parameters(module)
                return output, loss, update
            self._add_proximal_term(module, start)
            self._client_optimizer.step()
        self._clear_gradients()
        return output, loss, self.plan.delta(module, start, masks)

    @torch.no_grad()
    def _add_proximal_term(self, module, start: list[torch.Tensor]) -> None:
        """FedProx: the gradient of ``mu / 2 * ||w - w_start||^2`` on the shared parameters."""
        if not self.proximal_mu:
            return
        for tensor, origin in zip(self.plan.shared, start, strict=True):
            param = module.get_parameter(tensor.name)
            if param.grad is not None:
                param.grad.add_(param - origin.view_as(param), alpha=self.proximal_mu)

    def _step_local_parameters(self, module) -> None:
        """The device's optimizer step of what never leaves it; shared gradients are set aside."""
        for tensor in self.plan.shared:
            module.get_parameter(tensor.name).grad = None
        if self.plan.local_parameters:
            self._client_optimizer.step()
        self._clear_gradients()

    @override
    def backward(self, closure_loss: torch.Tensor, optimizer, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The devices' backward passes ran in ``training_step``; here the server averages the
        uploads and every device receives the download (``on_after_backward`` sees it)."""
        module = self.lightning_module
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)
        if self.synchronous:
            self._exchange()
        else:
            self._aggregate(self._round)
        return self.precision_plugin.post_backward(closure_loss, module)

    def _exchange(self) -> None:
        total, weight, uploads = self._transport.server_sum()
        average = [t / weight for t in total]
        step = self.lightning_module.trainer.global_step
        download = self.compression.encode_download(average, step=step, seed=(self._seed, DOWNLOAD, step))
        self.ledger.record(uploads)
        self.ledger.record(Traffic.of_download(download, receivers=self.num_devices))
        self.ledger.record(
            Traffic(
                dense_values=2 * self.num_devices * self.plan.dense_numel,
                transport_bytes=self._transport.moved_bytes,
                sampled=self.num_devices,
                reported=self.num_devices,
            )
        )
        received = self.download_codec.decode(download, self.plan.numels)
        self.plan.write_gradients(self.lightning_module, received)

    def _aggregate(self, this_round: Round) -> None:
        """The server's side of a sampled round: the average update is the server optimizer's gradient."""
        total, weight, uploads = self._transport.server_sum()
        self.ledger.record(uploads)
        receivers, senders = len(this_round.sampled), len(this_round.reporting)
        self.ledger.record(
            Traffic(
                dense_values=(receivers + senders) * self.plan.dense_numel,
                transport_bytes=self._transport.moved_bytes,
                sampled=receivers,
                reported=senders,
            )
        )
        module = self.lightning_module
        if self._server_model is not None:  # the devices started from a lossy copy; the server did not
            self.plan.write_parameters(module, self._server_model)
            self._server_model = None
        if not weight:  # every sampled device failed: the model stays as it is
            for tensor in self.plan.shared:
                module.get_parameter(tensor.name).grad = None
            return
        self.plan.write_gradients(module, [t / weight for t in total])

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
        """Every process writes its step's files, then process 0 the checkpoint that names them, then
        each removes its files of older steps: killed at any moment, a checkpoint and all its files
        are there (module docstring of :mod:`lightning_fed.federation.checkpoint`)."""
        step = checkpoint.get("global_step")
        states = self.devices.state_dict() if self.devices is not None else {}
        rows = self.devices.rows if self.devices is not None else None
        checkpoint[CHECKPOINT_KEY] = {
            "ledger": self.ledger.state_dict(),
            "num_devices": self.num_devices,
            "processes": self.world_size,
            "share_log_sigma2": self.share_log_sigma2,
            "transport": self.transport,
            "devices": states if self.is_global_zero else None,
            "rows_layout": self.devices.layout if rows is not None else None,
            "files_step": step,
            "server_residual": self.compression.server_residual,
            "downlink": self.downlink.state_dict(),
        }
        written = []
        if rows is not None:
            written.append(rows_path(filepath, self.global_rank, step))
            written[-1].parent.mkdir(parents=True, exist_ok=True)
            rows.copy_to(written[-1])
        if not self.is_global_zero and states:
            written.append(sidecar_path(filepath, self.global_rank, step))
            side = {"global_step": step, "devices": states}
            write_aside(written[-1], lambda partial: torch.save(side, partial))
        self.barrier("federated checkpoint files")  # all of them exist before the checkpoint names them
        super().save_checkpoint(checkpoint, filepath, storage_options)
        self.barrier("federated checkpoint")
        for stale in set(files_of(filepath, self.global_rank)) - set(written):
            remove_saved(stale)

    @override
    def remove_checkpoint(self, filepath) -> None:
        super().remove_checkpoint(filepath)
        if self.is_global_zero:
            for rank in range(self.world_size):
                for path in files_of(filepath, rank):
                    remove_saved(path)

    @override
    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only=weights_only)
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
        self.compression.server_residual = federated.get("server_residual")
        self.downlink.load_state_dict(federated.get("downlink"))
        pool = dict(federated.get("devices") or {})
        for rank in range(1, federated.get("processes", 1)):
            pool.update(read_sidecar(checkpoint, checkpoint_path, rank))
        self._resumed = {d: pool[d] for d in self.hosted_devices if d in pool}
        self._resumed_path, self._resumed_step = checkpoint_path, federated.get("files_step")
        self._resumed_layout = federated.get("rows_layout")
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


def _without_ddp_defaults(kwargs: dict) -> dict:
    """``kwargs`` less the DistributedDataParallel options that are None or at their defaults."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

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


StrategyRegistry.register(
    FederatedStrategy.strategy_name,
    FederatedStrategy,
    description="Federated learning: devices hosted by processes, masked payloads counted (lightning-fed)",
)
