"""The communication ledger: what crossed the wire, per step, per epoch and in total."""

import threading
from dataclasses import asdict, dataclass, fields

VALUE_BYTES = 4  # the paper's measure: 4 bytes per transmitted value


@dataclass
class Traffic:
    """Traffic of one step (or a sum of steps), summed over all devices.

    ``upload`` / ``download`` count the float values in the payloads (the paper's measure);
    ``*_bytes`` the payloads' lengths, headers and positions included (wire bytes);
    ``dense_values`` what dense distributed SGD would move (2 x N x P; in a sampled round, the
    model to each sampled device and a dense update from each reporting one); ``transport_bytes``
    what the collectives between processes moved (0 when the whole federation is in one process);
    ``sampled`` and ``reported`` the devices that received the model and that sent an update.
    """

    upload: int = 0
    download: int = 0
    upload_bytes: int = 0
    download_bytes: int = 0
    dense_values: int = 0
    steps: int = 0
    transport_bytes: int = 0
    sampled: int = 0
    reported: int = 0

    @classmethod
    def from_dict(cls, state: dict) -> "Traffic":
        """Reads :func:`dataclasses.asdict` output; keys of older ledgers (the Golomb estimate) are
        ignored.

        Example::

            >>> Traffic.from_dict({"upload": 2, "upload_bytes": 16, "upload_golomb_bytes": 9}).upload_bytes
            16
        """
        names = {field.name for field in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})

    def __iadd__(self, other: "Traffic") -> "Traffic":
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))
        return self

    @property
    def values(self) -> int:
        return self.upload + self.download

    @property
    def paper_bytes(self) -> int:
        """The paper's measure: 4 bytes per value, positions ignored."""
        return self.values * VALUE_BYTES

    @property
    def wire_bytes(self) -> int:
        return self.upload_bytes + self.download_bytes

    @property
    def dense_bytes(self) -> int:
        return self.dense_values * VALUE_BYTES

    @property
    def paper_fraction(self) -> float:
        """Values sent as a fraction of dense distributed SGD's."""
        return self.values / self.dense_values if self.dense_values else 0.0

    @property
    def wire_fraction(self) -> float:
        """Payload bytes (headers and positions included) as a fraction of dense bytes."""
        return self.wire_bytes / self.dense_bytes if self.dense_bytes else 0.0

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat metrics for a logger, e.g. ``comm/total/upload``."""
        names = ["upload", "download", "paper_bytes", "wire_bytes", "dense_bytes", "transport_bytes"]
        names += ["sampled", "reported"]
        values = {f"{prefix}/{name}": float(getattr(self, name)) for name in names}
        for measure in ("paper", "wire"):
            values[f"{prefix}/{measure}_fraction"] = getattr(self, f"{measure}_fraction")
        return values


class CommunicationLedger:
    """Accumulates :class:`Traffic`: the current step, per epoch, per step history, and in total.

    The transports (:mod:`lightning_fed.federation.transport`) call :meth:`record` for every
    message they carry, the strategy records the round's dense baseline and calls
    :meth:`end_step` after the optimizer step.

    Example::

        >>> ledger = CommunicationLedger()
        >>> ledger.record(Traffic(upload=3, download=6, dense_values=40))
        >>> _ = ledger.end_step(epoch=0)
        >>> ledger.total.values, ledger.last_step.paper_fraction, ledger.epochs[0].steps
        (9, 0.225, 1)
    """

    def __init__(self, keep_history: bool = True) -> None:
        self.keep_history = keep_history
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.pending = Traffic()
        self.last_step = Traffic()
        self.total = Traffic()
        self.epochs: dict[int, Traffic] = {}
        self.history: list[Traffic] = []

    def record(self, traffic: Traffic) -> None:
        with self._lock:
            self.pending += traffic

    def end_step(self, epoch: int) -> Traffic:
        """Close the step: add it to its epoch, the history and the total; return it."""
        with self._lock:
            step, self.pending = self.pending, Traffic()
        step.steps = 1
        self.last_step = step
        self.total += step
        self.epochs.setdefault(epoch, Traffic())
        self.epochs[epoch] += step
        if self.keep_history:
            self.history.append(step)
        return step

    def state_dict(self) -> dict:
        return {
            "total": asdict(self.total),
            "last_step": asdict(self.last_step),
            "epochs": {int(e): asdict(t) for e, t in self.epochs.items()},
            "history": [asdict(t) for t in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        self.total = Traffic.from_dict(state.get("total", {}))
        self.last_step = Traffic.from_dict(state.get("last_step", {}))
        self.epochs = {int(e): Traffic.from_dict(t) for e, t in state.get("epochs", {}).items()}
        self.history = [Traffic.from_dict(t) for t in state.get("history", [])]
