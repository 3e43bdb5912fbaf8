"""Each device's message bounded in L2 norm: DP-FedAvg's clipping, as the last stage of the upload's way.

What is bounded is what is sent: the stage clips the message the earlier stages produced
(masking, error feedback, top-k, the user's stages) to norm ``clip`` over all its tensors
together (the scaled float32 tensors' own norm checked, not the arithmetic's), and lets the codec
write it. A lossless codec writes exactly those values. After a lossy one the stage checks the
norm of what the receiver decodes: a value coder that can raise it (QSGD's stochastic rounding
up, fp16's rounding) gets the message scaled down and written again, with a growing margin, until
the decoded message is within the bound; QSGD and fp16 are linear in their input's scale, so one
or two writes do it, and sign's decoded norm is never above its input's.

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
    return math.sqrt(
        sum(float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64)) ** 2 for t in tensors)
    )


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
        norm = self.norms[sending.sender] = message_norm(tensors)
        scale, scaled = (1.0, tensors) if norm <= clip else self._scaled(tensors, clip / norm)
        for margin in MARGINS:
            sent = rest(scaled)
            if not getattr(sent.codec, "lossy", True):  # the receiver reads exactly ``scaled``
                return sent
            decoded = message_norm(sent.decoded())
            if decoded <= clip:
                return sent
            scale, scaled = self._scaled(tensors, scale * clip / decoded * (1.0 - margin))
        raise RuntimeError(
            f"the codec {sent.codec!r} keeps the message's norm above the clip {clip:g} ({decoded:g})"
        )

    def _scaled(self, tensors, scale: float) -> tuple[float, list[torch.Tensor]]:
        """``tensors`` times the largest factor, at most ``scale``, whose float32 products have norm
        within the clip (float rounding can put ``clip / norm`` a hair above it), and that factor."""
        for margin in MARGINS:
            scaled = [t * scale for t in tensors]
            if message_norm(scaled) <= self.bound.value:
                return scale, scaled
            scale *= 1.0 - max(margin, 2.0**-24)
        raise RuntimeError(f"the message cannot be scaled within the clip {self.bound.value:g}")
