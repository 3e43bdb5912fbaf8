"""A device's own state, and the store that swaps it into the one model a process trains.

A device is data, not a process: its local parameters (log_sigma2 in the paper's variant), its
local buffers (batch-norm statistics), the optimizer state of its local parameters, its random
streams and ``extra`` (room for error-feedback residuals) live in a :class:`DeviceState`. A process
hosts several devices in turn: :meth:`DeviceStates.hosting` loads a device's state into the model
and the optimizer, and stores it back when the device is done.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_fed.federation.device_rows import DiskRows, Layout, read_row
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

        def onto(values: dict | None, reference: dict) -> dict:
            if values is None or not reference:  # kept in a file of rows, not in the state
                return {}
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


FEEDBACK = "feedback:"  # row entries of error-feedback tensors: "feedback:KIND:I", I-th shared tensor


def feedback_layout(kinds: tuple[str, ...], numels: list[int]) -> Layout:
    """The row entries of the error-feedback tensors ``kinds`` (e.g. residual) of every shared tensor."""
    return [(f"{FEEDBACK}{kind}:{i}", (numel,)) for kind in kinds for i, numel in enumerate(numels)]


def split_row(row: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
    """A row's local parameters, and its error-feedback tensors as ``{kind: [tensor per shared one]}``.

    Example::

        >>> params, feedback = split_row({"w": torch.zeros(2), "feedback:residual:0": torch.ones(3)})
        >>> list(params), {k: [t.tolist() for t in v] for k, v in feedback.items()}
        (['w'], {'residual': [[1.0, 1.0, 1.0]]})
    """
    params = {k: v for k, v in row.items() if not k.startswith(FEEDBACK)}
    feedback: dict[str, list[torch.Tensor]] = {}
    for key, value in row.items():
        if key.startswith(FEEDBACK):
            kind = key[len(FEEDBACK) :].rsplit(":", 1)[0]
            feedback.setdefault(kind, []).append(value.reshape(-1))
    return params, feedback


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
        rows_path: keep the local parameters in a folder of per-device files there
            (:class:`~lightning_fed.federation.device_rows.DiskRows`) instead of in memory: 1,000
            devices of CifarNet's log_sigma2 are 5.5 GB.
        rank: the process's rank, recorded with each row (where a checkpoint finds it).
        feedback: the error-feedback tensors a device keeps in ``extra`` (``("residual",)``); with
            rows on disk they live in each device's row too, out of memory between its rounds.

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
        rows_path: Path | None = None,
        rank: int = 0,
        feedback: tuple[str, ...] = (),
    ) -> None:
        self.model, self.plan, self.optimizer = model, plan, optimizer
        self.keep_optimizer_state = keep_optimizer_state
        self.devices = list(devices)
        self.rank = rank
        self.where = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.initial = {n: model.get_parameter(n).detach().clone() for n in plan.local_parameters}
        self.layout: Layout = [(n, tuple(t.shape)) for n, t in self.initial.items()]
        self.feedback = tuple(feedback)
        if rows_path:
            self.layout += feedback_layout(self.feedback, plan.numels)
        self.rows = DiskRows(rows_path, self.devices, self.layout) if rows_path and self.layout else None
        self.states: dict[int, DeviceState] = {d: self._initial(seed, d) for d in self.devices}
        self.resident = self.devices[0]  # the device whose state the model holds between rounds
        self.current: int | None = None  # the device the model computes as, inside ``hosting``

    def _initial(self, seed: int, device: int) -> DeviceState:
        params = {} if self.rows else {n: t.clone() for n, t in self.initial.items()}
        buffers = {n: self.model.get_buffer(n).detach().clone() for n in self.plan.local_buffers}
        return DeviceState(params, buffers, rng=_seeded_rng(device_seed(seed, device), self.where))

    def _params_of(self, device: int, feedback: bool = False) -> dict[str, torch.Tensor]:
        """``device``'s local parameters; with ``feedback``, its error-feedback tensors from its row
        go into its ``extra`` as well."""
        if self.rows is None:
            return self.states[device].params
        row = self.rows.read(device)
        if row is None:
            return self.initial
        params, kept = split_row(row)
        if feedback:
            self.states[device].extra.update(kept)
        return params

    @torch.no_grad()
    def load(self, device: int, feedback: bool = True) -> None:
        """Put ``device``'s parameters, buffers and optimizer state into the model and optimizer."""
        state = self.states[device]
        for name, value in self._params_of(device, feedback).items():
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
        if self.rows is not None:
            self.rows.write(
                device, self._row_from({n: self.model.get_parameter(n) for n in self.initial}, state.extra)
            )
        for name, value in state.params.items():
            value.copy_(self.model.get_parameter(name))
        for name, value in state.buffers.items():
            value.copy_(self.model.get_buffer(name))
        if self.optimizer is not None:
            for name in self.plan.local_parameters:
                entry = self.optimizer.state.pop(self.model.get_parameter(name), None)
                if entry and self.keep_optimizer_state:
                    state.optimizer[name] = entry

    def _row_from(self, params: dict[str, torch.Tensor], extra: dict) -> dict[str, torch.Tensor]:
        """The row to write: local parameters, and the feedback tensors taken out of ``extra``
        (zeros where the device has none yet)."""
        row = dict(params)
        for kind in self.feedback:
            tensors = extra.pop(kind, None)
            for i, numel in enumerate(self.plan.numels):
                row[f"{FEEDBACK}{kind}:{i}"] = tensors[i] if tensors is not None else torch.zeros(numel)
        return row

    def _restore_params(self, device: int, state: dict, extra: dict, rows_file, rows_layout) -> dict | None:
        """``device``'s saved local parameters, put where this store keeps them: the tensors to keep
        in memory, or None once its row is on disk (a saved row of the same layout is adopted file
        to file; any other is read, and its feedback tensors go into ``extra``)."""
        params = state.get("params")
        if params is None and state.get("params_at") is not None:
            rank, row = state["params_at"]
            if rows_file is None:
                raise ValueError(f"device {device}'s parameters are in process {rank}'s rows file")
            layout = rows_layout or self.layout
            if self.rows is not None and layout == self.layout:
                self.rows.adopt(device, rows_file(rank), row)  # nothing of it passes through memory
                return None
            params, kept = split_row(read_row(rows_file(rank), row, layout))
            extra.update(kept)
        if params is None:
            params = self.initial
        if self.rows is None:
            return params
        if params is not self.initial or any(k in extra for k in self.feedback):
            self.rows.write(device, self._row_from(params, extra))
        return None

    @contextmanager
    def hosting(self, device: int) -> Iterator[DeviceState]:
        """The model computes as ``device``: its state in, its random stream on; stored back after."""
        outer = _rng_state(self.where)
        self.load(device)
        _set_rng_state(self.states[device].rng, self.where)
        self.current = device
        try:
            yield self.states[device]
        finally:
            self.current = None
            self.states[device].rng = _rng_state(self.where)
            self.store(device)
            _set_rng_state(outer, self.where)

    def rest(self) -> None:
        """Between rounds the model holds the resident device's state (what is evaluated and saved)."""
        self.load(self.resident, feedback=False)

    def state_dict(self) -> dict[int, dict]:
        """Every hosted device's state; with rows on disk, ``params`` is None and ``params_at`` says
        which process's file and row hold them (None: never trained, still the initial ones)."""
        states = {d: s.state_dict() for d, s in self.states.items()}
        if self.rows is not None:
            for device, state in states.items():
                row = self.rows.row_of(device)
                state["params"] = None
                state["params_at"] = None if row is None else (self.rank, row)
        return states

    def load_state_dict(
        self,
        states: dict[int, dict],
        rows_file: Callable[[int], Path] | None = None,
        rows_layout: Layout | None = None,
    ) -> None:
        """Restore the hosted devices' states (others in ``states`` are ignored).

        ``rows_file(rank)`` is where process ``rank`` saved its rows, for states whose ``params``
        were kept on disk, in ``rows_layout`` (default: this store's own).
        """
        missing = [d for d in self.devices if d not in states]
        if missing:
            raise ValueError(f"the checkpoint holds no state for devices {missing}")
        restored = {}
        for device in self.devices:
            state = dict(states[device])
            extra = dict(state.get("extra") or {})
            state["params"] = self._restore_params(device, state, extra, rows_file, rows_layout)
            state["extra"] = extra
            restored[device] = DeviceState.from_state_dict(state, self.states[device])
        self.states = restored
        self.load(self.resident, feedback=False)
