"""The communication ledger: what crossed the wire, per step, per epoch and in total."""

import threading
from dataclasses import asdict, dataclass, fields

from lightning_fed.communication.encoding import VALUE_BYTES, golomb_bytes, paper_bytes, wire_bytes


@dataclass
class Traffic:
    """Traffic of one step (or a sum of steps), summed over all devices.

    ``upload`` / ``download`` count gradient values; ``*_bytes`` the wire bytes of the encoding
    (indices or bitmap); ``*_golomb_bytes`` those with Rice-coded positions; ``dense_values`` what
    dense distributed SGD would move (2 x N x P).
    """

    upload: int = 0
    download: int = 0
    upload_bytes: int = 0
    download_bytes: int = 0
    dense_values: int = 0
    steps: int = 0
    upload_golomb_bytes: int = 0
    download_golomb_bytes: int = 0

    @classmethod
    def from_dict(cls, state: dict) -> "Traffic":
        """Reads :func:`dataclasses.asdict` output; a state saved before the Golomb measure existed
        counts those steps at their wire bytes (an upper bound: Golomb positions never cost more
        than a bitmap's, plus one byte).

        Example::

            >>> Traffic.from_dict({"upload": 2, "upload_bytes": 16, "steps": 1}).upload_golomb_bytes
            16
        """
        state = dict(state)
        for side in ("upload", "download"):
            state.setdefault(f"{side}_golomb_bytes", state.get(f"{side}_bytes", 0))
        return cls(**state)

    def __iadd__(self, other: "Traffic") -> "Traffic":
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))
        return self

    @property
    def values(self) -> int:
        return self.upload + self.download

    @property
    def paper_bytes(self) -> int:
        """The paper's measure: 4 bytes per value, indices ignored."""
        return paper_bytes(self.values)

    @property
    def wire_bytes(self) -> int:
        return self.upload_bytes + self.download_bytes

    @property
    def golomb_bytes(self) -> int:
        return self.upload_golomb_bytes + self.download_golomb_bytes

    @property
    def dense_bytes(self) -> int:
        return self.dense_values * VALUE_BYTES

    @property
    def paper_fraction(self) -> float:
        """Values sent as a fraction of dense distributed SGD's."""
        return self.values / self.dense_values if self.dense_values else 0.0

    @property
    def wire_fraction(self) -> float:
        """Wire bytes (indices included) as a fraction of dense bytes."""
        return self.wire_bytes / self.dense_bytes if self.dense_bytes else 0.0

    @property
    def golomb_fraction(self) -> float:
        """Bytes with Rice-coded positions as a fraction of dense bytes."""
        return self.golomb_bytes / self.dense_bytes if self.dense_bytes else 0.0

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat metrics for a logger, e.g. ``comm/total/upload``."""
        names = ["upload", "download", "paper_bytes", "wire_bytes", "golomb_bytes", "dense_bytes"]
        values = {f"{prefix}/{name}": float(getattr(self, name)) for name in names}
        for measure in ("paper", "wire", "golomb"):
            values[f"{prefix}/{measure}_fraction"] = getattr(self, f"{measure}_fraction")
        return values


def bucket_traffic(upload_counts, download_counts, numels, dense_mask, num_devices: int) -> Traffic:
    """Traffic of one exchange of a group of tensors.

    Args:
        upload_counts: ``[num_devices][num_tensors]`` values each device sends per tensor.
        download_counts: ``[num_tensors]`` non-zero values of the average per tensor.
        numels: ``[num_tensors]`` sizes of the tensors.
        dense_mask: ``[num_tensors]`` True for tensors that dense SGD would send too (theta, bias).
        num_devices: N.

    Example::

        >>> t = bucket_traffic([[2, 0], [1, 0]], [3, 0], [100, 100], [True, True], 2)
        >>> t.upload, t.download, t.upload_bytes, t.upload_golomb_bytes, t.dense_values
        (3, 6, 24, 17, 800)
    """

    def sent(encoding) -> tuple[int, int]:
        up = sum(encoding(n, numel) for row in upload_counts for n, numel in zip(row, numels, strict=True))
        down = sum(encoding(n, numel) for n, numel in zip(download_counts, numels, strict=True))
        return up, num_devices * down

    upload_bytes, download_bytes = sent(wire_bytes)
    upload_golomb, download_golomb = sent(golomb_bytes)
    dense = sum(numel for numel, counted in zip(numels, dense_mask, strict=True) if counted)
    return Traffic(
        upload=int(sum(sum(row) for row in upload_counts)),
        download=num_devices * int(sum(download_counts)),
        upload_bytes=upload_bytes,
        download_bytes=download_bytes,
        dense_values=2 * num_devices * dense,
        upload_golomb_bytes=upload_golomb,
        download_golomb_bytes=download_golomb,
    )


class CommunicationLedger:
    """Accumulates :class:`Traffic`: the current step, per epoch, per step history, and in total.

    The strategy's communication hook calls :meth:`record` once per gradient bucket (possibly
    from a communication thread) and :meth:`end_step` after the optimizer step.

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
