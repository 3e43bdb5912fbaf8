"""Error feedback: what a lossy codec dropped is kept and added to the next message.

A device sends ``C(u + e)`` instead of ``C(u)`` and keeps ``e' = (u + e) - D(C(u + e))``, the
difference between what it meant to send and what the server will decode (Seide et al. 1-bit SGD,
Karimireddy et al. EF-signSGD, DGC's local accumulation). So ``sent + e' == u + e`` exactly,
step by step: nothing is lost, only delayed. ``e`` is part of the device's state (checkpointed).

Two rules keep the learned sparsity intact:

- on a device, the residual of a weight pruned by ``M(alpha)`` is dropped, not kept: a pruned
  coordinate is never re-injected;
- on the server (the compressed download), the residual is added only where the round's average
  is non-zero, i.e. where some device still sends; elsewhere it waits.

Each is a stage of a message's way (:mod:`lightning_fed.federation.stages`), its residual (and
DGC's velocity) kept in the sender's state.

Example::

    >>> from lightning_fed.communication import make_codec
    >>> way, state = Way([ErrorFeedback()], make_codec("topk:0.5")), {}
    >>> update = [torch.tensor([1.0, -4.0, 2.0, 0.5])]
    >>> way.send(update, Sending(state, step=0, seed=0)).decoded()[0].tolist(), state["residual"][0].tolist()
    ([0.0, -4.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.5])
    >>> for step in (1, 2):
    ...     sent = way.send(update, Sending(state, step=step, seed=0))
    >>> sent.decoded()[0].tolist()  # the 1.0 held back twice is sent at the third step
    [3.0, -4.0, 0.0, 0.0]
"""

import torch

from lightning_fed.federation.stages import Sending, Stage, Way, masked  # noqa: F401 (Way: the doctest's)


class ErrorFeedback(Stage):
    """A device sends ``C(u + e * keep)`` and keeps ``e' = (u + e * keep) - D(C(u + e * keep))``.

    ``keep`` is the ``M(alpha)`` the update was masked with (``sending.keeps``): a pruned
    coordinate's residual is dropped, so it is neither sent nor kept.
    """

    state_names = ("residual",)

    def __call__(self, tensors, sending, rest):
        residual, keeps = sending.state.get("residual"), sending.keep_of(len(tensors))
        intended = list(tensors)
        if residual is not None:
            pairs = zip(tensors, residual, keeps, strict=True)
            intended = [u + masked(e.to(u.device), keep) for u, e, keep in pairs]
        sent = rest(intended)
        sending.state["residual"] = _left(intended, sent)
        return sent


class MomentumCorrection(Stage):
    """DGC's momentum correction: the device's own momentum ``u = m u + g`` is what goes on.

    Placed before :class:`ErrorFeedback`, so the device sends ``C(e + u)`` and keeps
    ``e' = e + u - D(C(e + u))``; ``u`` is cleared where something was sent (momentum factor
    masking), so a coordinate's momentum restarts once it has been sent. With it the server should
    step plain SGD (``server_optimizer="fedavg"``): the momentum is here.
    """

    state_names = ("velocity",)

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum

    def __repr__(self) -> str:
        return f"MomentumCorrection({self.momentum})"

    def __call__(self, tensors, sending, rest):
        velocity, keeps = sending.state.get("velocity"), sending.keep_of(len(tensors))
        if velocity is None:
            velocity = [torch.zeros_like(u) for u in tensors]
        velocity = [
            masked(self.momentum * v.to(u.device) + u, keep)
            for v, u, keep in zip(velocity, tensors, keeps, strict=True)
        ]
        sent = rest(velocity)
        decoded = [s.to(v.device) for s, v in zip(sent.decoded(), velocity, strict=True)]
        sending.state["velocity"] = [
            torch.where(s != 0, 0, v) for v, s in zip(velocity, decoded, strict=True)
        ]
        return sent


class ServerErrorFeedback(Stage):
    """The server's download of ``average`` plus its residual where the average is non-zero (where
    some device still sends); elsewhere the residual waits."""

    state_names = ("residual",)

    def __call__(self, tensors, sending, rest):
        residual = sending.state.get("residual")
        intended, waiting = list(tensors), None
        if residual is not None:
            sent_where = [a != 0 for a in tensors]
            intended = [
                a + torch.where(w, e, 0) for a, e, w in zip(tensors, residual, sent_where, strict=True)
            ]
            waiting = [torch.where(w, 0, e) for e, w in zip(residual, sent_where, strict=True)]
        sent = rest(intended)
        left = _left(intended, sent)
        if waiting is not None:
            left = [r + w for r, w in zip(left, waiting, strict=True)]
        sending.state["residual"] = left
        return sent


def _left(intended: list[torch.Tensor], sent) -> list[torch.Tensor]:
    """What the receiver will not get of ``intended``: it minus what it decodes of ``sent``."""
    decoded = [s.to(t.device) for s, t in zip(sent.decoded(), intended, strict=True)]
    return [t - s for t, s in zip(intended, decoded, strict=True)]
