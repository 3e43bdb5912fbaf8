"""A device's own state, and the store that swaps it into the one model a process trains.

A device is data, not a process: its local parameters (log_sigma2 in the paper's variant), its
local buffers (batch-norm statistics), the optimizer state of its local parameters, its random
streams and ``extra`` (room for error-feedback residuals) live in a :class:`DeviceState`. A process
hosts several devices in turn: :meth:`DeviceStates.hosting` loads a device's state into the model
and the optimizer, and stores it back when the device is done.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_fed.federation.sharing import SharingPlan


def device_seed(seed: int, device: int) -> int:
    """The seed of device ``device``'s random stream in a run seeded with ``seed``.

    Example::

        >>> device_seed(0, 3), device_seed(1, 0)
        (3, 1000003)
    """
    return (seed * 1_000_003 + device) % 2**63


@dataclass
class DeviceState:
    """Everything that is one device's own; tensors on the CPU or the model's device."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    optimizer: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    drawn: int = 0  # batches of its shard stream taken so far

    def state_dict(self) -> dict:
        return {
            "params": self.params, "buffers": self.buffers, "optimizer": self.optimizer,
            "rng": self.rng, "extra": self.extra, "drawn": self.drawn,
        }  # fmt: skip

    @classmethod
    def from_state_dict(cls, state: dict, like: "DeviceState") -> "DeviceState":
        """A state read from a checkpoint, copied onto the tensors' devices and dtypes of ``like``."""

        def onto(values: dict, reference: dict) -> dict:
            return {k: v.to(reference[k].device, reference[k].dtype).clone() for k, v in values.items()}

        return cls(
            onto(state["params"], like.params), onto(state["buffers"], like.buffers),
            {n: {k: _clone(v) for k, v in s.items()} for n, s in state.get("optimizer", {}).items()},
            {k: v.clone() for k, v in state.get("rng", {}).items()}, dict(state.get("extra", {})),
            int(state.get("drawn", 0)),
        )  # fmt: skip


def _clone(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seeded_rng(seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.Generator().manual_seed(seed).get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.Generator(device).manual_seed(seed).get_state()
    return state


class DeviceStates:
    """The states of the devices one process hosts, swapped in and out of ``model``.

    Every device starts from the model's local parameters and buffers as they are now, and a
    random stream of its own (``device_seed(seed, device)``), so a device draws the same noise
    whichever process hosts it.

    Args:
        model: the model the process trains.
        plan: which parameters are local.
        devices: the devices hosted here.
        seed: the run's seed.
        optimizer: the optimizer whose state of the local parameters is the device's own.
        keep_optimizer_state: keep that state from round to round (the paper's protocol, where
            every device steps every round); without it a device starts every round with a fresh
            optimizer state, as clients of FedAvg do.

    Example::

        >>> from lightning_fed.nn import variational
        >>> model = variational(nn.Sequential(nn.Linear(2, 1)))
        >>> states = DeviceStates(model, SharingPlan(model), devices=[0, 1], seed=0)
        >>> with states.hosting(1):
        ...     _ = model[0].log_sigma2.data.fill_(-3.0)
        >>> states.rest()
        >>> model[0].log_sigma2.tolist(), states.states[1].params["0.log_sigma2"].tolist()
        ([[-10.0, -10.0]], [[-3.0, -3.0]])
    """

    def __init__(
        self,
        model: nn.Module,
        plan: SharingPlan,
        devices: list[int],
        seed: int = 0,
        optimizer=None,
        keep_optimizer_state: bool = True,
    ) -> None:
        self.model, self.plan, self.optimizer = model, plan, optimizer
        self.keep_optimizer_state = keep_optimizer_state
        self.devices = list(devices)
        self.where = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.states: dict[int, DeviceState] = {d: self._initial(seed, d) for d in self.devices}
        self.resident = self.devices[0]  # the device whose state the model holds between rounds

    def _initial(self, seed: int, device: int) -> DeviceState:
        params = {n: self.model.get_parameter(n).detach().clone() for n in self.plan.local_parameters}
        buffers = {n: self.model.get_buffer(n).detach().clone() for n in self.plan.local_buffers}
        return DeviceState(params, buffers, rng=_seeded_rng(device_seed(seed, device), self.where))

    @torch.no_grad()
    def load(self, device: int) -> None:
        """Put ``device``'s parameters, buffers and optimizer state into the model and optimizer."""
        state = self.states[device]
        for name, value in state.params.items():
            self.model.get_parameter(name).copy_(value)
        for name, value in state.buffers.items():
            self.model.get_buffer(name).copy_(value)
        if self.optimizer is not None:
            for name in self.plan.local_parameters:
                param = self.model.get_parameter(name)
                if name in state.optimizer and self.keep_optimizer_state:
                    self.optimizer.state[param] = state.optimizer[name]
                else:
                    self.optimizer.state.pop(param, None)

    @torch.no_grad()
    def store(self, device: int) -> None:
        """Copy the model's local parameters, buffers and optimizer state back into ``device``'s state."""
        state = self.states[device]
        for name, value in state.params.items():
            value.copy_(self.model.get_parameter(name))
        for name, value in state.buffers.items():
            value.copy_(self.model.get_buffer(name))
        if self.optimizer is not None:
            for name in self.plan.local_parameters:
                entry = self.optimizer.state.pop(self.model.get_parameter(name), None)
                if entry and self.keep_optimizer_state:
                    state.optimizer[name] = entry

    @contextmanager
    def hosting(self, device: int) -> Iterator[DeviceState]:
        """The model computes as ``device``: its state in, its random stream on; stored back after."""
        outer = _rng_state(self.where)
        self.load(device)
        _set_rng_state(self.states[device].rng, self.where)
        try:
            yield self.states[device]
        finally:
            self.states[device].rng = _rng_state(self.where)
            self.store(device)
            _set_rng_state(outer, self.where)

    def rest(self) -> None:
        """Between rounds the model holds the resident device's state (what is evaluated and saved)."""
        self.load(self.resident)

    def state_dict(self) -> dict[int, dict]:
        return {d: s.state_dict() for d, s in self.states.items()}

    def load_state_dict(self, states: dict[int, dict]) -> None:
        """Restore the hosted devices' states (others in ``states`` are ignored)."""
        missing = [d for d in self.devices if d not in states]
        if missing:
            raise ValueError(f"the checkpoint holds no state for devices {missing}")
        self.states = {d: DeviceState.from_state_dict(states[d], self.states[d]) for d in self.devices}
        self.load(self.resident)
