"""What a round's messages become: the codecs of both directions and their error feedback.

One object holds the upload codec, the download codec, whether each side keeps what its codec
dropped (:mod:`lightning_fed.federation.error_feedback`), and the server's residual; the
strategy asks it for a device's payload and for the server's. Every bad combination is refused
when it is built, in one line naming the option.

Example::

    >>> compression = Compression("topk:0.01:5+qsgd:4", error_feedback=True)
    >>> compression.codec, compression.download_codec, compression.feedback_kinds
    (SparseCodec(topk:0.01:5+qsgd:4), SparseCodec(qsgd:4), ('residual',))
    >>> try:
    ...     Compression("float32", error_feedback=True)
    ... except ValueError as error:
    ...     print(str(error).split("; ")[1])
    SparseCodec(float32) drops nothing
"""

import torch

from lightning_fed.communication import Codec, Payload, default_download, make_codec
from lightning_fed.federation.error_feedback import (
    send_downlink_with_feedback,
    send_with_feedback,
    send_with_momentum_correction,
)

UPLOAD, DOWNLOAD = 0, 1  # the direction's place in a message's seed: (run seed, direction, ...)


class Compression:
    """The codecs of a federation's uploads and downloads, with their error feedback.

    Args:
        codec: the uploads' :class:`~lightning_fed.communication.Codec`, or a spec for
            :func:`~lightning_fed.communication.make_codec`; None: lossless.
        download_codec: the server's messages' codec; by default ``codec``'s value coder without
            its filters (the average of top-k uploads goes back as sparse as their union).
        error_feedback: each device keeps what the upload codec dropped and adds it to its next
            upload; needs a lossy codec.
        error_feedback_momentum: DGC's momentum correction (each device accumulates its own
            momentum); needs ``error_feedback``.
        download_error_feedback: the server keeps what the download codec dropped (the paper's
            protocol only: in sampled rounds the download is the model itself).
    """

    def __init__(
        self,
        codec: "Codec | str | list | None" = None,
        download_codec: "Codec | str | list | None" = None,
        error_feedback: bool = False,
        error_feedback_momentum: float = 0.0,
        download_error_feedback: bool = False,
    ) -> None:
        self.codec = make_codec(codec, "codec")
        self.download_given = download_codec is not None
        if self.download_given:
            self.download_codec = make_codec(download_codec, "download_codec")
        else:
            self.download_codec = default_download(self.codec)
        self.error_feedback = _check_error_feedback("error_feedback", error_feedback, self.codec)
        if not (isinstance(error_feedback_momentum, (int, float)) and 0 <= error_feedback_momentum < 1):
            raise ValueError(f"error_feedback_momentum must be in [0, 1), got {error_feedback_momentum!r}")
        if error_feedback_momentum and not error_feedback:
            raise ValueError(
                "error_feedback_momentum is DGC's momentum correction: it needs error_feedback=True"
            )
        self.error_feedback_momentum = float(error_feedback_momentum)
        self.download_error_feedback = _check_error_feedback(
            "download_error_feedback", download_error_feedback, self.download_codec
        )
        self.server_residual: list[torch.Tensor] | None = None

    def for_sampled_rounds(self, download_delta: bool = False) -> None:
        """Rounds of sampled devices download the model itself: losslessly unless a download codec
        was given, and without a server residual (a device that missed rounds has no use for it);
        with ``download_delta`` (every device in every round) they download the model's change, with
        the server's residual if asked (:mod:`lightning_fed.federation.downlink`)."""
        if self.download_error_feedback and not download_delta:
            raise ValueError(
                "download_error_feedback applies to the paper's protocol (every device, every round, "
                "one step) and to download='delta': in sampled rounds the download is the model itself"
            )
        if not self.download_given:
            self.download_codec = make_codec(None)

    @property
    def feedback_kinds(self) -> tuple[str, ...]:
        """What error feedback keeps on each device: its residual, and with DGC's correction its momentum."""
        if not self.error_feedback:
            return ()
        return ("residual", "velocity") if self.error_feedback_momentum else ("residual",)

    def encode_upload(
        self,
        update: list[torch.Tensor],
        extra: dict,
        keeps: list[torch.Tensor | None] | None,
        *,
        step: int,
        seed,
    ) -> Payload:
        """A device's payload of ``update``; with error feedback, of ``update`` plus the residual
        kept in ``extra`` (the device's state, updated here). ``keeps``: per tensor, the flat
        ``M(alpha)`` the update was masked with, so a pruned coordinate is neither sent nor kept."""
        if not self.error_feedback:
            return self.codec.encode(update, step=step, seed=seed)
        if self.error_feedback_momentum:
            payload, extra["residual"], extra["velocity"] = send_with_momentum_correction(
                self.codec, update, extra.get("residual"), extra.get("velocity"), keeps,
                self.error_feedback_momentum, step=step, seed=seed,
            )  # fmt: skip
            return payload
        payload, extra["residual"] = send_with_feedback(
            self.codec, update, extra.get("residual"), keeps, step=step, seed=seed
        )
        return payload

    def encode_download(self, average: list[torch.Tensor], *, step: int, seed) -> Payload:
        """The server's payload of ``average``; with download error feedback, plus its residual."""
        if not self.download_error_feedback:
            return self.download_codec.encode(average, step=step, seed=seed)
        payload, self.server_residual = send_downlink_with_feedback(
            self.download_codec, average, self.server_residual, step=step, seed=seed
        )
        return payload


def _check_error_feedback(option: str, asked: bool, codec: Codec) -> bool:
    if asked and not getattr(codec, "lossy", False):
        raise ValueError(f"{option} needs a lossy codec (topk, fp16, qsgd or sign); {codec!r} drops nothing")
    return bool(asked)
