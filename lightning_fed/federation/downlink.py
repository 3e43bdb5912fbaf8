"""The download of FedAvg-family rounds: the model itself, its change since the last one, or its kept weights.

In rounds of sampled devices (K < N) a device may have missed rounds, so by default it receives
the model itself (``download="model"``). With ``download="delta"`` the server sends the change
since the copy the device holds instead. When every device takes part in every round (K = N,
with local steps or failures), every device holds what it received the round before, and one
message serves them all: the server's model minus the one it sent last, exactly zero wherever no
device's update moved a weight. A pruned weight, which no device sends, then costs nothing on the
way back either, as in the paper's protocol, whose download is the averaged gradient. The devices
add the decoded change to their copy.

In sampled rounds (K < N) each device's copy is its own (:func:`send_change`): the server keeps
what each device holds (in the device's row, :data:`HELD`; as large as the shared model, so
1,000 devices of CifarNet are 5.5 GB, on disk past the store's limit) and sends each sampled
device the change from its copy to the model, a message of its own counted once. A device that
never received the model holds zeros: its first download is the model itself. A sampled device
that fails in the round (``failure_rate``) is taken to fail before its download: it is sent
nothing and its copy stays as it was (the shared download counts it as a receiver). With a lossy
download codec nothing drifts: the next change is taken from what the device really holds, so it
carries what the codec dropped last time (error feedback by construction, no server residual).
What it buys: the change since a device's last round is smaller than the model, so a quantiser
with the same bits rounds it more finely (or fewer bits round it as finely); a lossless codec
sends as many values as the model, less the weights no update moved (pruned ones, under the
paper's masking).

A lossy download codec needs the server's error feedback here
(:class:`~lightning_fed.federation.error_feedback.ServerErrorFeedback`): what the codec
dropped is kept and sent with the next change where that is non-zero, so the devices' copy stays
within one message's error of the server's model instead of drifting round after round. The
server steps its own exact model either way. The first round sends the model itself in float32:
the devices start from the server's exact model.

Under Algorithm 1 (log_sigma2 shared) the mask ``M(alpha)`` is a function of the shared model, so
the server knows it, and a sampled device can be sent only the kept weights with their positions
(``download="sparse"``): theta and log_sigma2 masked by the server's ``M(alpha)``, the unmasked
tensors (biases) whole. What a device does with a weight it is not sent: it holds it pruned, theta
0 and log_sigma2 at :func:`pruned_log_sigma2` (log_alpha one above the threshold, so its own
``M(alpha)`` prunes it too, and a noise variance of about ``exp(threshold - 17.4)``, negligible). What
that implies: the device's evaluation model ``theta * M(alpha)`` is the server's exactly (with a
lossless codec); its uploads never carry a pruned weight (they are masked by its ``M(alpha)``, the
server's); its training differs from a whole download only by the pruned weights' own
contribution to the noisy forward pass (their theta, near 0 since shrinking theta is what prunes,
and their noise). Under the paper's masking no update reaches a pruned weight, so with the FedAvg
server step (``server_optimizer="fedavg"``, the default with local steps) the server's pruned
weights are frozen and stay pruned; a server optimizer with momentum (FedAvgM, FedAdam) can move
them and bring one back, and then it is sent again. In the paper's variant each device's mask
depends on its own log_sigma2, which the server does not hold, so ``"sparse"`` is refused there.

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

import math
from collections.abc import Callable

import torch

from lightning_fed.communication import Codec, Payload, make_codec
from lightning_fed.nn.kl import EPSILON

DOWNLOADS = ("model", "delta", "sparse")
HELD = "download:held"  # a device's own copy of the shared model (sampled rounds, ``"delta"``)


def check_download(
    download: str, every_device: bool | None, synchronous: bool, compression=None, share_log_sigma2=None
) -> None:
    """A one-line error where ``download`` (a known kind: :class:`ModelDownlink` checks that)
    cannot work: ``"delta"`` in the paper's protocol (``synchronous``); with every device in every
    round (``every_device`` True; None: not known yet) and a lossy download codec but no server error
    feedback, or in sampled rounds (False) with it, where each device's copy is tracked instead
    (``compression``: its settings; None: the download codec is not known yet); ``"sparse"`` in the
    paper's protocol or without a shared log_sigma2 (``share_log_sigma2`` False).

    Example::

        >>> check_download("sparse", every_device=False, synchronous=False, share_log_sigma2=True)
        >>> try:
        ...     check_download("sparse", every_device=False, synchronous=False, share_log_sigma2=False)
        ... except ValueError as error:
        ...     print(str(error).split(":")[0])
        download='sparse' needs share_log_sigma2=True (Algorithm 1)
    """
    if download == "sparse":
        _check_sparse(synchronous, share_log_sigma2)
    if download != "delta":
        return
    if synchronous:
        raise ValueError(
            "download='delta' applies to FedAvg rounds (local steps, sampling or failures); the paper's "
            "protocol (one step, every device) already downloads the averaged gradient"
        )
    if every_device is False and compression is not None and compression.download_error_feedback:
        raise ValueError(
            "download='delta' in sampled rounds sends each device the change from the copy it holds, "
            "which carries what the codec dropped: download_error_feedback applies with every device"
        )
    if (
        every_device
        and compression is not None
        and compression.download_codec.lossy
        and not compression.download_error_feedback
    ):
        raise ValueError(
            f"download='delta' with the lossy download codec {compression.download_codec!r} needs "
            "download_error_feedback=True, else the devices' copy drifts from the model round after round"
        )


def _check_sparse(synchronous: bool, share_log_sigma2) -> None:
    if synchronous:
        raise ValueError(
            "download='sparse' applies to FedAvg rounds (local steps, sampling or failures); the paper's "
            "protocol downloads the averaged gradient, which the masks already make sparse"
        )
    if share_log_sigma2 is False:
        raise ValueError(
            "download='sparse' needs share_log_sigma2=True (Algorithm 1): in the paper's variant each "
            "device's M(alpha) depends on its own log_sigma2, which the server does not hold"
        )


def send_change(
    server: list[torch.Tensor],
    held: list[torch.Tensor] | None,
    compression,
    deliver: Callable[[Payload, Codec], list[torch.Tensor]],
    *,
    step: int,
    seed,
) -> list[torch.Tensor]:
    """One device's download in sampled rounds with ``download="delta"``: the change from its copy
    ``held`` (None: it never received the model, and holds zeros) to the server's model ``server``,
    encoded, carried by ``deliver`` to it alone, and added to its copy; returns the new copy.

    Example::

        >>> from lightning_fed.federation.compression import Compression
        >>> def deliver(payload, codec):
        ...     tensors, values = codec.read(payload, [3])
        ...     print(values, "values")
        ...     return tensors
        >>> copy = send_change([torch.tensor([1.0, 2.0, 3.0])], None, Compression(), deliver, step=0, seed=0)
        3 values
        >>> copy = send_change([torch.tensor([1.0, 2.5, 3.0])], copy, Compression(), deliver, step=1, seed=0)
        1 values
        >>> copy[0].tolist()
        [1.0, 2.5, 3.0]
    """
    held = held if held is not None else [torch.zeros_like(t) for t in server]
    change = [now - mine.to(now.device) for now, mine in zip(server, held, strict=True)]
    decoded = deliver(compression.encode_download(change, step=step, seed=seed), compression.download_codec)
    return [mine + d.to(mine.device) for mine, d in zip(held, decoded, strict=True)]


def pruned_log_sigma2(threshold: float) -> float:
    """The log_sigma2 a device gives a weight it was not sent (theta 0): log_alpha is
    ``log_sigma2 - log(0 + 1e-8)``, so this puts it one above ``threshold`` (pruned by the
    device's own ``M(alpha)``), with a noise variance ``exp(threshold + 1) * 1e-8``.

    Example::

        >>> from lightning_fed.nn.kl import log_alpha_of
        >>> log_alpha_of(torch.zeros(1), torch.full((1,), pruned_log_sigma2(3.0))).item() > 3.0
        True
    """
    return threshold + math.log(EPSILON) + 1.0


def unsent_pairs(plan, model) -> list[tuple[int, int, float]]:
    """For a sparse download: per shared log_sigma2, the message's index of its theta, its own index
    and :func:`pruned_log_sigma2` of its layer's threshold (``plan``: the
    :class:`~lightning_fed.federation.SharingPlan`)."""
    index = {t.name: i for i, t in enumerate(plan.shared)}
    pairs = []
    for i, tensor in enumerate(plan.shared):
        if tensor.mask_of is not None and tensor.name.endswith("log_sigma2"):
            layer = model.get_submodule(tensor.mask_of)
            pairs.append((index[f"{tensor.mask_of}.weight"], i, pruned_log_sigma2(layer.threshold)))
    return pairs


def hold_as_pruned(tensors: list[torch.Tensor], pairs: list[tuple[int, int, float]]) -> list[torch.Tensor]:
    """A device's copy of a sparse download: where a layer's theta was not sent (0), its
    log_sigma2 is set to the pair's pruned value (:func:`unsent_pairs`); ``tensors`` are changed.

    Example::

        >>> held = hold_as_pruned([torch.tensor([0.5, 0.0]), torch.tensor([-9.0, 0.0])], [(0, 1, -14.4)])
        >>> [round(v, 1) for v in held[1].tolist()]
        [-9.0, -14.4]
    """
    for theta, log_sigma2, value in pairs:
        unsent = tensors[theta] == 0
        tensors[log_sigma2] = tensors[log_sigma2].masked_fill(unsent, value)
    return tensors


class ModelDownlink:
    """What the round's devices receive and hold: ``send`` encodes it, has it carried and returns
    the devices' decoded copy; ``state_dict`` is what a resumed run needs."""

    def __init__(self, download: str = "model") -> None:
        if download not in DOWNLOADS:
            raise ValueError(f"download must be one of {', '.join(DOWNLOADS)}, got {download!r}")
        self.download = download
        self.sent: list[torch.Tensor] | None = None  # the server's model when it last sent (delta)
        self.held: list[torch.Tensor] | None = None  # the devices' copy (delta)
        self.pairs: list[tuple[int, int, float]] = []  # sparse: each log_sigma2 beside its theta

    def send(
        self,
        model: list[torch.Tensor],
        compression,
        deliver: Callable[[Payload, Codec], list[torch.Tensor]],
        *,
        step: int,
        seed,
        keeps: list[torch.Tensor | None] | None = None,
    ) -> list[torch.Tensor]:
        """What the devices hold after the round's download of ``model``. ``deliver(payload,
        codec)`` carries a payload to the devices and returns what they read (the host counts it).
        ``model`` is kept as the last model sent, so the caller passes tensors it will not change.
        ``keeps``: per tensor, the flat public ``M(alpha)`` that masks it (``"sparse"``)."""
        if self.download == "model":
            payload = compression.encode_download(model, step=step, seed=seed)
            return deliver(payload, compression.download_codec)
        if self.download == "sparse":
            payload = compression.encode_download(model, step=step, seed=seed, keeps=keeps)
            return hold_as_pruned(deliver(payload, compression.download_codec), self.pairs)
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
