"""A device's own state in named parts, and the store that swaps it into the one model a process trains.

A device is data, not a process. Its state (:class:`DeviceState`) has named parts: its local
parameters (log_sigma2 in the paper's variant), its local buffers (batch-norm statistics), the
optimizer state of its local parameters, its random stream, each upload stage's state (error
feedback's residual, DGC's velocity: ``stages``), what the algorithm keeps on it (SCAFFOLD's
control variate: ``algorithm``) and how far it has read its shard. What is as large as the model
(the local parameters and the stages' state) is the device's row, kept between its rounds by one
of two stores of one interface (:mod:`~lightning_fed.federation.device_rows`: in memory, or one
file a device on disk under a schema header); the rest stays in memory. A process hosts several
devices in turn: :meth:`DeviceStates.hosting` loads a device's state into the model and the
optimizer, and stores it back when the device is done. A checkpoint holds
:meth:`DeviceStates.state_dict`, and :func:`saved_state` reads one device's back, the one reader of
both a resume and :mod:`~lightning_fed.federation.checkpoint`.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_fed.federation.device_rows import (
    DiskRows,
    Layout,
    MemoryRows,
    RowSchema,
    read_row,
    same_layout,
    saved_layout,
    unpack,
)
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
    """The parts of a device's state kept in memory (its row is in the store; tensors on the CPU or
    the model's device). ``stages`` holds the upload stages' state while the device computes."""

    buffers: dict[str, torch.Tensor]
    optimizer: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    stages: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    algorithm: dict[str, Any] = field(default_factory=dict)
    drawn: int = 0  # batches of its shard stream taken so far


def saved_state(state: dict, stage_names: tuple[str, ...] = (), rows_file=None, layout=None) -> dict:
    """One device's saved state (an entry of :meth:`DeviceStates.state_dict`) with its row read:
    ``params`` and ``stages`` filled from the file of rows that holds them (``rows_file(rank)``),
    and a checkpoint of lightning-fed <= 0.3's ``extra`` split into ``stages`` (``stage_names``,
    and error feedback's residual and DGC's velocity) and ``algorithm`` (the rest).

    Example::

        >>> old = {"params": {}, "buffers": {}, "extra": {"residual": [torch.ones(1)], "c": 1}}
        >>> state = saved_state(old)
        >>> list(state["stages"]), state["algorithm"]
        (['residual'], {'c': 1})
    """
    state = dict(state)
    if "extra" in state:
        extra, known = dict(state.pop("extra") or {}), (*stage_names, "residual", "velocity")
        state["stages"] = {k: v for k, v in extra.items() if k in known}
        state["algorithm"] = {k: v for k, v in extra.items() if k not in known}
    state["stages"] = dict(state.get("stages") or {})  # the caller's checkpoint stays as it is
    if state.get("params") is None and state.get("params_at") is not None:
        rank, row = state["params_at"]
        if rows_file is None:
            raise ValueError(f"the device's parameters are in process {rank}'s rows file")
        state["params"], stages = unpack(read_row(rows_file(rank), row, layout))
        state["stages"] = {**state["stages"], **stages}
    return state


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
        rows_path: keep the devices' rows in a folder of per-device files there
            (:class:`~lightning_fed.federation.device_rows.DiskRows`) instead of in memory: 1,000
            devices of CifarNet's log_sigma2 are 5.5 GB.
        rank: the process's rank, recorded with each row (where a checkpoint finds it).
        stage_names: what the upload stages keep on a device (``("residual",)``); part of its row.

    Example::

        >>> from lightning_fed.nn import variational
        >>> model = variational(nn.Sequential(nn.Linear(2, 1)))
        >>> states = DeviceStates(model, SharingPlan(model), devices=[0, 1], seed=0)
        >>> with states.hosting(1):
        ...     _ = model[0].log_sigma2.data.fill_(-3.0)
        >>> states.rest()
        >>> model[0].log_sigma2.tolist(), states.row(1)[0]["0.log_sigma2"].tolist()
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
        stage_names: tuple[str, ...] = (),
    ) -> None:
        self.model, self.plan, self.optimizer = model, plan, optimizer
        self.keep_optimizer_state = keep_optimizer_state
        self.devices = list(devices)
        self.rank = rank
        self.where = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.initial = {n: model.get_parameter(n).detach().clone() for n in plan.local_parameters}
        self.stage_names = tuple(stage_names)
        self.schema = RowSchema([(n, tuple(t.shape)) for n, t in self.initial.items()])
        if rows_path:
            self.schema = RowSchema(self.schema.params, self.stage_names, tuple(plan.numels))
        self.layout: Layout = self.schema.layout
        on_disk = rows_path and self.layout
        self.rows = DiskRows(rows_path, self.devices, self.schema) if on_disk else MemoryRows(self.devices)
        self.states: dict[int, DeviceState] = {d: self._initial(seed, d) for d in self.devices}
        self.resident = self.devices[0]  # the device whose state the model holds between rounds
        self.current: int | None = None  # the device the model computes as, inside ``hosting``

    @property
    def on_disk(self) -> bool:
        return isinstance(self.rows, DiskRows)

    def _initial(self, seed: int, device: int) -> DeviceState:
        buffers = {n: self.model.get_buffer(n).detach().clone() for n in self.plan.local_buffers}
        return DeviceState(buffers, rng=_seeded_rng(device_seed(seed, device), self.where))

    def row(self, device: int) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
        """``device``'s local parameters and upload stages' state as stored (the initial parameters
        and no stage state if it never trained)."""
        return self.rows.read(device) or (self.initial, {})

    @torch.no_grad()
    def load(self, device: int, stages: bool = True) -> None:
        """Put ``device``'s parameters, buffers and optimizer state into the model and optimizer;
        with ``stages``, its stages' state goes into its ``stages`` (it is about to compute)."""
        state = self.states[device]
        params, kept = self.row(device)
        for name, value in params.items():
            self.model.get_parameter(name).copy_(value)
        for name, value in state.buffers.items():
            self.model.get_buffer(name).copy_(value)
        if stages:
            state.stages.update(kept)
        if self.optimizer is not None:
            for name in self.plan.local_parameters:
                param = self.model.get_parameter(name)
                if name in state.optimizer and self.keep_optimizer_state:
                    self.optimizer.state[param] = state.optimizer[name]
                else:
                    self.optimizer.state.pop(param, None)

    @torch.no_grad()
    def store(self, device: int) -> None:
        """Copy the model's local parameters, buffers and optimizer state back into ``device``'s
        state; its row (with its stages' state, taken out of its ``stages``) into the store."""
        state = self.states[device]
        params = {n: self.model.get_parameter(n) for n in self.initial}
        self.rows.write(device, params, self._row_stages(state.stages))
        for name, value in state.buffers.items():
            value.copy_(self.model.get_buffer(name))
        if self.optimizer is not None:
            for name in self.plan.local_parameters:
                entry = self.optimizer.state.pop(self.model.get_parameter(name), None)
                if entry and self.keep_optimizer_state:
                    state.optimizer[name] = entry

    def _row_stages(self, stages: dict) -> dict:
        """Take out of ``stages`` the state the store keeps in a device's row (memory: all of it;
        disk: its schema's names); what is left stays in memory with the device."""
        kept = [n for n in stages if not self.on_disk or n in self.schema.stage_names]
        return {n: stages.pop(n) for n in kept}

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
        self.load(self.resident, stages=False)

    def state_dict(self, devices: list[int] | None = None) -> dict[int, dict]:
        """The state of every device held here (or of ``devices``), its parts by name; with rows on
        disk, ``params`` is None and ``params_at`` says which process's file and row hold its row
        (None: never trained, still the initial parameters)."""
        states = {}
        for device in self.devices if devices is None else devices:
            state = self.states[device]
            saved = {
                "buffers": state.buffers, "optimizer": state.optimizer, "rng": state.rng,
                "algorithm": state.algorithm, "drawn": state.drawn,
            }  # fmt: skip
            if self.on_disk:
                row = self.rows.row_of(device)
                saved.update(params=None, params_at=None if row is None else (self.rank, row), stages={})
            else:
                params, stages = self.row(device)
                saved.update(params=params, stages=stages)
            saved["stages"] = {**saved["stages"], **state.stages}
            states[device] = saved
        return states

    def load_state_dict(
        self,
        states: dict[int, dict],
        rows_file: Callable[[int], Path] | None = None,
        rows_layout: Layout | None = None,
        initial: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Restore the hosted devices' states (others in ``states`` are ignored).

        ``rows_file(rank)`` is where process ``rank`` saved its rows, for states whose ``params``
        were kept on disk, in ``rows_layout`` (the checkpoint's; a folder's schema header wins).
        ``initial``: the saved run's :attr:`initial` local parameters, where a device that has not
        trained yet starts (a disk store saves no row for it; the model this store was built from
        holds the resumed model's, not the run's start).
        """
        missing = [d for d in self.devices if d not in states]
        if missing:
            raise ValueError(f"the checkpoint holds no state for devices {missing}")
        if initial is not None:
            self.initial = {n: initial[n].to(self.where, v.dtype).clone() for n, v in self.initial.items()}
        for device in self.devices:
            state = states[device]
            if self._adopt(device, state, rows_file, rows_layout):
                state = {**state, "params": None, "params_at": None}
            state = saved_state(state, self.stage_names, rows_file, rows_layout)
            self.states[device] = self._restored(state, self.states[device])
            if state.get("params") is not None:
                params = {n: v.to(self.where, self.initial[n].dtype) for n, v in state["params"].items()}
                self.rows.write(device, params, self._row_stages(state["stages"]))
                self.states[device].stages = state["stages"]
        self.load(self.resident, stages=False)

    def _adopt(self, device: int, state: dict, rows_file, rows_layout: Layout | None) -> bool:
        """Take ``device``'s saved row file to file when it is of this store's layout (the saved
        folder's schema header, else the checkpoint's ``rows_layout``): nothing of it passes
        through memory, so a resume of many devices stays as small as the fresh run."""
        if not self.on_disk or state.get("params") is not None or state.get("params_at") is None:
            return False
        rank, row = state["params_at"]
        path = Path(rows_file(rank)) if rows_file is not None else None
        if path is None:
            return False
        layout = (saved_layout(path) if path.is_dir() else None) or rows_layout or self.layout
        if not same_layout(layout, self.layout):
            return False
        self.rows.adopt(device, path, row)
        return True

    def _restored(self, state: dict, like: DeviceState) -> DeviceState:
        """The memory parts of a saved state, on the tensors' devices and dtypes of ``like``."""
        buffers = {k: v.to(like.buffers[k].device, like.buffers[k].dtype).clone()
                   for k, v in (state.get("buffers") or {}).items()}  # fmt: skip
        return DeviceState(
            buffers,
            {n: {k: _clone(v) for k, v in s.items()} for n, s in state.get("optimizer", {}).items()},
            {k: v.clone() for k, v in state.get("rng", {}).items()},
            {},
            dict(state.get("algorithm") or {}),
            int(state.get("drawn", 0)),
        )
