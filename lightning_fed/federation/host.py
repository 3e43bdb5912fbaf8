"""The host's side of a round: what an algorithm may ask of the strategy that hosts its devices.

:class:`RoundHost` is a mixin of :class:`~lightning_fed.strategy.FederatedStrategy`; an algorithm
(:mod:`lightning_fed.federation.algorithm`) receives the strategy as ``host`` and uses these
methods, and the attributes ``lightning_module``, ``plan`` (what is shared), ``config``,
``compression``, ``ledger``, ``devices`` (each device's state), ``client_optimizer``,
``num_devices``, ``seed`` and ``root_device``.
"""

from collections.abc import Mapping
from contextlib import contextmanager

import torch

from lightning_fed.federation.compression import DOWNLOAD, UPLOAD
from lightning_fed.federation.health import DeviceFailed, NonFiniteError, non_finite
from lightning_fed.federation.messages import MODEL, SERVER, UPDATE, Message
from lightning_fed.federation.placement import deal


class RoundHost:
    """Hosting a round's devices: a device's step, its upload, the server's messages to devices."""

    _step_args = ((), {})  # training_step's arguments after the batch, for every device's step
    _non_finite: tuple[int, str] | None = None
    _trainable: list | None = None
    placement_of_run = "hosted"  # or "balanced": resolved by the assembly when a fit starts
    dealt: tuple[int, list[list[int]]] | None = None  # balanced: the last round's step and deal, by rank

    def local_step(self, device: int, batch):
        """One forward and backward of ``device`` (hosted), through the precision plugin."""
        rest, kwargs = self._step_args
        self.clear_gradients()  # the last round's download is still there
        output = super().training_step(batch, *rest, **kwargs)
        loss = output["loss"] if isinstance(output, Mapping) else output
        if loss is None:
            raise ValueError(f"training_step returned no loss for device {device}")
        self.precision_plugin.backward(loss, self.lightning_module, self.client_optimizer)
        return output, loss

    def step_local_parameters(self) -> None:
        """The device's optimizer step of what never leaves it; shared gradients are set aside."""
        module = self.lightning_module
        for tensor in self.plan.shared:
            module.get_parameter(tensor.name).grad = None
        if self.plan.local_parameters:
            self.client_optimizer.step()
        self.clear_gradients()

    def clear_gradients(self) -> None:
        """``zero_grad(set_to_none=True)`` of the trained parameters, without walking every submodule."""
        if self._trainable is None:
            self._trainable = [p for p in self.lightning_module.parameters() if p.requires_grad]
        for param in self._trainable:
            param.grad = None

    def begin_round(self, this_round, step: int) -> None:
        """What the round's start sets up before any device trains: the public ``M(alpha)`` of the
        model the devices received (for the server's mask check, DP's noise and the secure sum's
        coordinates), the secure sum's key exchange among the sampled devices, the attack's round."""
        config = self.config
        public = config.share_log_sigma2 and config.mask
        if config.enforce_mask or (public and (config.dp_clip is not None or config.secure_aggregation)):
            self._public_keeps = self.plan.keeps(self.plan.masks(self.lightning_module))
        if config.secure_aggregation:  # the round's sampled devices share their keys
            keeps = self._public_keeps if public else None
            self.transport_of_round.begin_round(this_round.sampled, keeps, step, self.seed)
        if self.attack is not None:
            self.attack.begin_round(step, this_round.reporting)

    def devices_of_round(self, this_round, source=None) -> list[int]:
        """The round's reporting devices this process trains, in the order they run: those hosted
        here (honest first for an attack that sees them, :mod:`lightning_fed.federation.attacks`),
        or its deal of them by their local steps in ``source`` (``placement``, balanced)."""
        if self.placement_of_run == "balanced":
            work = {d: self.algorithm.local_step_count(source, d) for d in this_round.reporting}
            dealt = deal(this_round.reporting, work, self.world_size)
            self.dealt = (self.lightning_module.trainer.global_step, dealt)  # what the watchdog names
            return dealt[self.global_rank]
        hosted = set(self.hosted_devices)
        devices = [d for d in this_round.reporting if d in hosted]
        return devices if self.attack is None else self.attack.order(devices)

    def upload(self, device: int, result) -> None:
        """``device``'s update through the upload way (its stages, then the codec), to the transport."""
        if self._non_finite is None and (kind := non_finite(result.loss, result.update)) is not None:
            self._non_finite = (device, kind)
        step = self.lightning_module.trainer.global_step
        payload = self.compression.encode_upload(
            result.update, self.devices.states[device].stages, result.keeps,
            step=step, seed=(self.seed, UPLOAD, device, step), sender=device,
        )  # fmt: skip
        self.transport_of_round.upload(Message(UPDATE, device, step, payload, self.weights[device]))
        if self.server_aggregation.privacy is not None:  # adaptive clipping's bit, if on
            self.server_aggregation.privacy.send_clip_bit(device, step)

    def send_to_devices(
        self, tensors: list[torch.Tensor], receivers: int, kind: str = MODEL
    ) -> list[torch.Tensor]:
        """The server's message of ``tensors`` to ``receivers`` devices: through the download way,
        carried and counted once per receiver, and what the devices read."""
        step = self.lightning_module.trainer.global_step
        payload = self.compression.encode_download(tensors, step=step, seed=(self.seed, DOWNLOAD, step))
        message = Message(kind, SERVER, step, payload)
        return self.deliver(message, self.compression.download_codec, receivers, [t.numel() for t in tensors])

    def deliver(self, message: Message, codec, receivers: int, numels: list[int] | None = None):
        """The server's ``message`` (encoded with ``codec``) read by ``receivers`` devices, counted."""
        return self.transport_of_round.download(message, codec, receivers, numels)

    @contextmanager
    def _failures_named(self, device: int):
        """An exception of ``device``'s computation becomes a :class:`DeviceFailed` that names it."""
        try:
            yield
        except (DeviceFailed, NonFiniteError):
            raise
        except Exception as error:
            raise DeviceFailed(device, self.lightning_module.trainer.global_step, error) from error

    def _stop_if_non_finite(self) -> None:
        found = self.transport_of_round.first_non_finite(self._non_finite, self.num_devices, self.root_device)
        if found is not None:
            trainer = self.lightning_module.trainer
            raise NonFiniteError(
                f"device {found[0]}'s {found[1]} is not finite (NaN or inf) at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}); the server did not apply the step"
            )
