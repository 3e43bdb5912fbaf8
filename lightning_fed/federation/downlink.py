"""The download of FedAvg-family rounds: the model itself, or what changed since the last one.

In rounds of sampled devices (K < N) a device may have missed rounds, so it receives the model
itself (``download="model"``, the default). When every device takes part in every round (K = N,
with local steps or failures), every device holds what it received the round before, and the
server can send the change instead (``download="delta"``): the server's model minus the one it
sent last, exactly zero wherever no device's update moved a weight. A pruned weight, which no
device sends, then costs nothing on the way back either, as in the paper's protocol, whose
download is the averaged gradient. The devices add the decoded change to their copy.

A lossy download codec needs the server's error feedback here
(:class:`~lightning_fed.federation.error_feedback.ServerErrorFeedback`): what the codec
dropped is kept and sent with the next change where that is non-zero, so the devices' copy stays
within one message's error of the server's model instead of drifting round after round. The
server steps its own exact model either way. The first round sends the model itself in float32:
the devices start from the server's exact model.

Example::

    >>> from lightning_fed.federation.compression import Compression
    >>> def deliver(payload, codec):  # what a device reads (the host's also counts it)
    ...     tensors, values = codec.read(payload, [3])
    ...     print(values, "values")
    ...     return tensors
    >>> downlink, lossless = ModelDownlink("delta"), Compression()
    >>> downlink.send([torch.tensor([1.0, 2.0, 3.0])], lossless, deliver, step=0, seed=0)[0].tolist()
    3 values
    [1.0, 2.0, 3.0]
    >>> downlink.send([torch.tensor([1.0, 2.5, 3.0])], lossless, deliver, step=1, seed=0)[0].tolist()
    1 values
    [1.0, 2.5, 3.0]
"""

from collections.abc import Callable

import torch

from lightning_fed.communication import Codec, Payload, make_codec

DOWNLOADS = ("model", "delta")


def check_download(download: str, every_device: bool | None, synchronous: bool, compression=None) -> None:
    """A one-line error where ``download`` (a known kind: :class:`ModelDownlink` checks that)
    cannot work: ``"delta"`` in rounds that leave devices out (``every_device`` False; None: not
    known yet) or in the paper's protocol (``synchronous``), or with a lossy download codec but no
    server error feedback (``compression``: its settings; None: the download codec is not known yet)."""
    if download != "delta":
        return
    if synchronous:
        raise ValueError(
            "download='delta' applies to FedAvg rounds (local steps, sampling or failures); the paper's "
            "protocol (one step, every device) already downloads the averaged gradient"
        )
    if every_device is False:
        raise ValueError(
            "download='delta' needs every device in every round (devices_per_round=num_devices): "
            "a device that missed a round has no copy to add the change to"
        )
    if (
        compression is not None
        and compression.download_codec.lossy
        and not compression.download_error_feedback
    ):
        raise ValueError(
            f"download='delta' with the lossy download codec {compression.download_codec!r} needs "
            "download_error_feedback=True, else the devices' copy drifts from the model round after round"
        )


class ModelDownlink:
    """What the round's devices receive and hold: ``send`` encodes it, has it carried and returns
    the devices' decoded copy; ``state_dict`` is what a resumed run needs."""

    def __init__(self, download: str = "model") -> None:
        if download not in DOWNLOADS:
            raise ValueError(f"download must be one of {', '.join(DOWNLOADS)}, got {download!r}")
        self.download = download
        self.sent: list[torch.Tensor] | None = None  # the server's model when it last sent (delta)
        self.held: list[torch.Tensor] | None = None  # the devices' copy (delta)

    def send(
        self,
        model: list[torch.Tensor],
        compression,
        deliver: Callable[[Payload, Codec], list[torch.Tensor]],
        *,
        step: int,
        seed,
    ) -> list[torch.Tensor]:
        """What the devices hold after the round's download of ``model``. ``deliver(payload,
        codec)`` carries a payload to the devices and returns what they read (the host counts it).
        ``model`` is kept as the last model sent, so the caller passes tensors it will not change."""
        if self.download == "model":
            payload = compression.encode_download(model, step=step, seed=seed)
            return deliver(payload, compression.download_codec)
        if self.held is None:  # the first round: the exact model
            codec = make_codec(None)
            self.held = deliver(codec.encode(model, step=step, seed=seed), codec)
        else:
            change = [now - before for now, before in zip(model, self.sent, strict=True)]
            payload = compression.encode_download(change, step=step, seed=seed)
            decoded = deliver(payload, compression.download_codec)
            self.held = [held + d.to(held.device) for held, d in zip(self.held, decoded, strict=True)]
        self.sent = list(model)  # the caller's copies (``SharingPlan.values``): no second one
        return self.held

    def state_dict(self) -> dict:
        return {"download": self.download, "sent": self.sent, "held": self.held}

    def load_state_dict(self, state: dict | None) -> None:
        """A checkpoint's downlink; one of another kind (or none, from before downlinks) starts over."""
        if state and state.get("download") == self.download:
            self.sent, self.held = state.get("sent"), state.get("held")
