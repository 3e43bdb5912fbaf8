"""What a round's messages become: each direction's way (stages, then the codec).

One object builds, from the federation's options, the uploads' way (masking by ``M(alpha)``,
DGC's momentum correction, error feedback, the upload codec) and the downloads' way (the
server's error feedback, the download codec), and holds the server's state (its residual); the
host asks it for a device's payload and for the server's
(:mod:`lightning_fed.federation.stages`). Every bad combination is refused when it is built, in
one line naming the option.

Example::

    >>> compression = Compression("topk:0.01:5+qsgd:4", error_feedback=True)
    >>> compression.upload_way
    Way(MaskByAlpha -> ErrorFeedback -> topk:0.01:5 -> SparseCodec(qsgd:4))
    >>> compression.download_way
    Way(SparseCodec(qsgd:4))
    >>> compression.feedback_kinds  # what each device keeps
    ('residual',)
    >>> try:
    ...     Compression("float32", error_feedback=True)
    ... except ValueError as error:
    ...     print(str(error).split("; ")[1])
    SparseCodec(float32) drops nothing
"""

import torch

from lightning_fed.communication import Codec, Payload, default_download, make_codec
from lightning_fed.federation.error_feedback import ErrorFeedback, MomentumCorrection, ServerErrorFeedback
from lightning_fed.federation.stages import MaskByAlpha, Sending, Way, codec_stages
from lightning_fed.federation.worker_momentum import WorkerMomentum

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
        worker_momentum: each device sends its own momentum of its updates with this factor
            (:mod:`lightning_fed.federation.worker_momentum`; 0: off).
        upload_stages, download_stages: further stages of each way, after the built-in ones,
            just before the codec.
    """

    def __init__(
        self,
        codec: "Codec | str | list | None" = None,
        download_codec: "Codec | str | list | None" = None,
        error_feedback: bool = False,
        error_feedback_momentum: float = 0.0,
        download_error_feedback: bool = False,
        upload_stages: "tuple | list" = (),
        download_stages: "tuple | list" = (),
        worker_momentum: float = 0.0,
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
        self.server_state: dict = {}  # the download stages' state (the server's residual)
        feedback = [ErrorFeedback()] if self.error_feedback else []
        momentum = [MomentumCorrection(self.error_feedback_momentum)] if self.error_feedback_momentum else []
        worker = [WorkerMomentum(worker_momentum)] if worker_momentum else []
        filters, writer = codec_stages(self.codec)
        self._upload = ([MaskByAlpha(), *worker, *momentum, *feedback, *filters, *upload_stages], writer)
        self.upload_way = Way(*self._upload)
        self._clip = self._attack = None
        self._download_stages = list(download_stages)
        self._download_masked = False  # a sparse download: the model masked by M(alpha) on its way
        self._download_way()

    @classmethod
    def of(cls, config) -> "Compression":
        """The compression a :class:`~lightning_fed.federation.config.FederationConfig` asks for."""
        return cls(
            config.codec, config.download_codec, config.error_feedback, config.error_feedback_momentum,
            config.download_error_feedback, config.upload_stages, config.download_stages,
            config.worker_momentum,
        )  # fmt: skip

    def set_attack(self, attack) -> None:
        """The attackers' stage (:mod:`lightning_fed.federation.attacks`) last on the upload way,
        just before the codec (None: no attack)."""
        self._attack = attack
        self._last_stages()

    def set_clip(self, clip) -> None:
        """DP-FedAvg's clipping (:class:`~lightning_fed.privacy.ClipToNorm`) after every other honest
        stage of the upload way: what is sent is what is bounded (None: no clipping)."""
        self._clip = clip
        self._last_stages()

    def _last_stages(self) -> None:
        stages, writer = self._upload
        last = [stage for stage in (self._clip, self._attack) if stage is not None]
        self.upload_way = Way([*stages, *last], writer)

    def _download_way(self) -> None:
        masking = [MaskByAlpha()] if self._download_masked else []
        server_feedback = [ServerErrorFeedback()] if self.download_error_feedback else []
        filters, writer = codec_stages(self.download_codec)
        self.download_way = Way([*masking, *server_feedback, *filters, *self._download_stages], writer)

    @property
    def server_residual(self) -> list[torch.Tensor] | None:
        """What the download codec dropped, kept by the server (None: nothing yet)."""
        return self.server_state.get("residual")

    @server_residual.setter
    def server_residual(self, residual: list[torch.Tensor] | None) -> None:
        self.server_state.pop("residual", None)
        if residual is not None:
            self.server_state["residual"] = residual

    def for_sampled_rounds(self, download: str = "model") -> None:
        """Rounds of sampled devices download the model itself: losslessly unless a download codec
        was given, and without a server residual (a device that missed rounds has no use for it);
        ``"delta"`` (every device in every round): the model's change, with the server's residual if
        asked; ``"sparse"``: the model masked by the server's public ``M(alpha)`` first
        (:mod:`lightning_fed.federation.downlink`)."""
        if self.download_error_feedback and download != "delta":
            raise ValueError(
                "download_error_feedback applies to the paper's protocol (every device, every round, "
                "one step) and to download='delta': in sampled rounds the download is the model itself"
            )
        if not self.download_given:
            self.download_codec = make_codec(None)
        self._download_masked = download == "sparse"
        self._download_way()

    @property
    def feedback_kinds(self) -> tuple[str, ...]:
        """What the upload stages keep on each device: error feedback's residual, with DGC's
        correction its velocity, and the worker momentum."""
        known = ("residual", "velocity")
        return tuple(sorted(self.upload_way.state_names, key=lambda n: known.index(n) if n in known else 2))

    def encode_upload(
        self,
        update: list[torch.Tensor],
        state: dict,
        keeps: list[torch.Tensor | None] | None,
        *,
        step: int,
        seed,
        sender: int | None = None,
    ) -> Payload:
        """Device ``sender``'s payload of ``update`` through the upload way; ``state``: the
        device's (its stages keep theirs there); ``keeps``: per tensor, the flat ``M(alpha)`` that
        masks it."""
        return self.upload_way.send(update, Sending(state, step, seed, keeps, sender)).payload

    def encode_download(
        self, average: list[torch.Tensor], *, step: int, seed, keeps: list[torch.Tensor | None] | None = None
    ) -> Payload:
        """The server's payload of ``average`` through the download way; ``keeps``: per tensor, the
        flat public ``M(alpha)`` that masks it (a sparse download)."""
        return self.download_way.send(average, Sending(self.server_state, step, seed, keeps)).payload


def _check_error_feedback(option: str, asked: bool, codec: Codec) -> bool:
    if asked and not getattr(codec, "lossy", False):
        raise ValueError(f"{option} needs a lossy codec (topk, fp16, qsgd or sign); {codec!r} drops nothing")
    return bool(asked)
