"""A message's way: a list of small stages, then the codec.

Every message a side sends goes through its direction's :class:`Way`: the uploads' way (masking
by ``M(alpha)``, DGC's momentum correction, error feedback, top-k, the codec) and the downloads'
way (the server's error feedback, top-k if the download codec has it, the codec). The codec that
ends a way writes the bytes: the positions and the values, quantised by its value coder (QSGD,
sign, fp16), which is why the quantisers are the codec's part and not stages of their own.

A stage has the shape of a Flower mod: it receives the message's tensors, what it knows of the
message (:class:`Sending`: the sender's state, the step, the seed of random rounding, the masks)
and the rest of the way, and returns what the rest of the way sent (:class:`Sent`: the payload,
and what the receiver decodes of it, computed once when a stage asks). So a stage can change what
goes in (masking, clipping, noise) and look at what came out (error feedback keeps the
difference). Its state lives in the sender's state (``sending.state``: a device's state,
checkpointed with it, or the server's) under the names in its ``state_names``.

A new stage is a small class; it is added to a way's ``stages`` (the last one runs just before
the codec) without touching the others.

Example::

    >>> from lightning_fed.communication import make_codec
    >>> class Halve(Stage):
    ...     def __call__(self, tensors, sending, rest):
    ...         return rest([t / 2 for t in tensors])
    >>> way = Way([MaskByAlpha(), Halve()], make_codec(None))
    >>> keep = torch.tensor([True, False, True])
    >>> sent = way.send([torch.tensor([2.0, 4.0, 6.0])], Sending({}, step=0, seed=0, keeps=[keep]))
    >>> sent.decoded()[0].tolist(), len(sent.payload)  # masked, halved, 5 + 1 + 8 bytes
    ([1.0, 0.0, 3.0], 14)
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lightning_fed.communication import Codec, Payload, SparseCodec


@dataclass
class Sending:
    """What the stages know of the message on its way: ``state`` (the sender's, where stages keep
    theirs), ``step``, ``seed`` (of the codec's random rounding), ``keeps`` (per tensor, the flat
    ``M(alpha)`` that masks it; None: nothing is masked) and ``sender`` (a device; None: the server)."""

    state: dict
    step: int
    seed: object
    keeps: list[torch.Tensor | None] | None = None
    sender: int | None = None

    def keep_of(self, count: int) -> list[torch.Tensor | None]:
        """``keeps``, or None for each of ``count`` tensors."""
        return self.keeps if self.keeps is not None else [None] * count


@dataclass
class Sent:
    """What the codec wrote (``payload``) and, on demand, what the receiver decodes of it."""

    payload: Payload
    codec: Codec
    numels: list[int]
    _decoded: list[torch.Tensor] | None = field(default=None, repr=False)

    def decoded(self) -> list[torch.Tensor]:
        """The tensors the receiver reads from ``payload`` (decoded once, on the CPU)."""
        if self._decoded is None:
            self._decoded = self.codec.decode(self.payload, self.numels)
        return self._decoded


Rest = Callable[[list[torch.Tensor]], Sent]


class Stage:
    """One step on a message's way; the base passes the message on unchanged."""

    state_names: tuple[str, ...] = ()  # what the stage keeps in the sender's state

    def __call__(self, tensors: list[torch.Tensor], sending: Sending, rest: Rest) -> Sent:
        return rest(tensors)

    def __repr__(self) -> str:
        return type(self).__name__


def masked(tensor: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``tensor`` times the ``M(alpha)`` ``keep`` of its shape (None: nothing is masked).

    Example::

        >>> masked(torch.tensor([1.0, 2.0]), torch.tensor([True, False])).tolist()
        [1.0, 0.0]
    """
    return tensor if keep is None else tensor * keep.to(tensor.dtype)


class MaskByAlpha(Stage):
    """Each tensor multiplied by the ``M(alpha)`` that masks it: a pruned weight sends zero."""

    def __call__(self, tensors, sending, rest):
        keeps = sending.keep_of(len(tensors))
        return rest([t if keep is None else t * keep for t, keep in zip(tensors, keeps, strict=True)])


class Filtering(Stage):
    """A codec's filter (top-k, :class:`~lightning_fed.communication.TopK`) as a stage: each tensor
    filtered, flat float32 on the CPU, as the codec would before writing its values."""

    def __init__(self, filter) -> None:
        self.filter = filter

    def __repr__(self) -> str:
        return repr(self.filter)

    def __call__(self, tensors, sending, rest):
        filtered = []
        for tensor in tensors:
            dense = tensor.detach().reshape(-1).to("cpu", torch.float32).numpy()
            filtered.append(torch.from_numpy(self.filter.filter(dense, sending.step)))
        return rest(filtered)


def codec_stages(codec: Codec) -> tuple[list[Stage], Codec]:
    """``codec``'s filters as stages of a way, and the codec that writes what they leave.

    Example::

        >>> from lightning_fed.communication import make_codec
        >>> codec_stages(make_codec("topk:0.01+qsgd:8"))
        ([topk:0.01], SparseCodec(qsgd:8))
    """
    if not isinstance(codec, SparseCodec) or not codec.filters:
        return [], codec
    writer = SparseCodec([e.name for e in codec.encodings], values=codec.values)
    return [Filtering(f) for f in codec.filters], writer


class Way:
    """A direction's ``stages``, in order, then ``codec``.

    Example::

        >>> from lightning_fed.communication import make_codec
        >>> Way([MaskByAlpha()], make_codec("qsgd:8"))
        Way(MaskByAlpha -> SparseCodec(qsgd:8))
    """

    def __init__(self, stages: list[Stage], codec: Codec) -> None:
        self.stages, self.codec = list(stages), codec

    def __repr__(self) -> str:
        return f"Way({' -> '.join([*(repr(s) for s in self.stages), repr(self.codec)])})"

    @property
    def state_names(self) -> tuple[str, ...]:
        """What the stages keep in the sender's state, each name once."""
        return tuple(dict.fromkeys(name for stage in self.stages for name in stage.state_names))

    def send(self, tensors: list[torch.Tensor], sending: Sending) -> Sent:
        """``tensors`` through every stage, then the codec."""

        def at(index: int, tensors: list[torch.Tensor]) -> Sent:
            if index == len(self.stages):
                return self._encode(tensors, sending)
            return self.stages[index](tensors, sending, lambda rest: at(index + 1, rest))

        return at(0, list(tensors))

    def _encode(self, tensors: list[torch.Tensor], sending: Sending) -> Sent:
        payload = self.codec.encode(tensors, step=sending.step, seed=sending.seed)
        return Sent(payload, self.codec, [t.numel() for t in tensors])
