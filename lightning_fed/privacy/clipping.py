"""Each device's message bounded in L2 norm: DP-FedAvg's clipping, as the last stage of the upload's way.

What is bounded is what is sent: the stage clips the message the earlier stages produced
(masking, error feedback, top-k, the user's stages) to norm ``clip`` over all its tensors
together, lets the codec write it, and checks the norm of what the receiver decodes. A value
coder that can raise the norm (QSGD's stochastic rounding up, fp16's rounding) gets the message
scaled down and written again, with a growing margin, until the decoded message is within the
bound; QSGD and fp16 are linear in their input's scale, so one or two writes do it. A lossless
codec, top-k and sign (whose decoded norm is at most its input's) never need a second write.

Example::

    >>> import torch
    >>> from lightning_fed.communication import make_codec
    >>> from lightning_fed.federation.stages import Sending, Way
    >>> way = Way([ClipToNorm(1.0)], make_codec(None))
    >>> sent = way.send([torch.tensor([3.0, 4.0])], Sending({}, step=0, seed=0))
    >>> [round(v, 6) for v in sent.decoded()[0].tolist()]  # norm 5 clipped to 1
    [0.6, 0.8]
"""

import math

import torch

from lightning_fed.federation.stages import Stage

MARGINS = (0.0, 2.0**-20, 2.0**-14, 2.0**-8, 2.0**-4)  # how far below the bound each rewrite aims


def message_norm(tensors: list[torch.Tensor]) -> float:
    """The L2 norm of ``tensors`` taken together, in float64.

    Example::

        >>> message_norm([torch.tensor([3.0]), torch.tensor([[4.0]])])
        5.0
    """
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors))


class ClipBound:
    """The clip norm C a device reads when it clips; fixed, or moved by adaptive clipping."""

    def __init__(self, value: float) -> None:
        self.value = float(value)


class ClipToNorm(Stage):
    """Scale the message to L2 norm at most ``clip`` (a number or a :class:`ClipBound`), as decoded.

    ``norms`` records, per sender, the norm of the message before it was clipped (adaptive
    clipping counts how many were within the bound); it is emptied by whoever reads it.
    """

    def __init__(self, clip: "float | ClipBound") -> None:
        self.bound = clip if isinstance(clip, ClipBound) else ClipBound(clip)
        self.norms: dict[int | None, float] = {}

    def __repr__(self) -> str:
        return f"ClipToNorm({self.bound.value:g})"

    def __call__(self, tensors, sending, rest):
        clip = self.bound.value
        norm = message_norm(tensors)
        self.norms[sending.sender] = norm
        scale = min(1.0, clip / norm) if norm > 0 else 1.0
        for margin in MARGINS:
            sent = rest([t * scale for t in tensors] if scale != 1.0 else tensors)
            decoded = message_norm(sent.decoded())
            if decoded <= clip:
                return sent
            scale *= clip / decoded * (1.0 - margin)
        raise RuntimeError(
            f"the codec {sent.codec!r} keeps the message's norm above the clip {clip:g} ({decoded:g})"
        )
