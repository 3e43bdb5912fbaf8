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

Example::

    >>> from lightning_fed.communication import make_codec
    >>> codec = make_codec("topk:0.5")
    >>> update = [torch.tensor([1.0, -4.0, 2.0, 0.5])]
    >>> payload, residual = send_with_feedback(codec, update, None, [None], step=0, seed=0)
    >>> codec.decode(payload, [4])[0].tolist(), residual[0].tolist()
    ([0.0, -4.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.5])
    >>> for step in (1, 2):
    ...     payload, residual = send_with_feedback(codec, update, residual, [None], step=step, seed=0)
    >>> codec.decode(payload, [4])[0].tolist()  # the 1.0 held back twice is sent at the third step
    [3.0, -4.0, 0.0, 0.0]
"""

import torch

from lightning_fed.communication import Codec, Payload


def send_with_feedback(
    codec: Codec,
    update: list[torch.Tensor],
    residual: list[torch.Tensor] | None,
    keeps: list[torch.Tensor | None],
    *,
    step: int,
    seed,
) -> tuple[Payload, list[torch.Tensor]]:
    """A device's payload of ``update + residual`` and its new residual.

    ``keeps``: per tensor, the flat ``M(alpha)`` the update was masked with (None: unmasked); the
    residual is multiplied by it, so a pruned coordinate is neither sent nor kept.
    """
    payload, _, residual = _send(codec, update, residual, keeps, step, seed)
    return payload, residual


def _send(codec, update, residual, keeps, step, seed):
    """The payload of ``update + residual * keep``, what the receiver decodes of it, and the new residual."""
    intended = list(update)
    if residual is not None:
        pairs = zip(update, residual, keeps, strict=True)
        intended = [u + _masked(e.to(u.device), keep) for u, e, keep in pairs]
    payload = codec.encode(intended, step=step, seed=seed)
    sent = [
        s.to(t.device)
        for s, t in zip(codec.decode(payload, [t.numel() for t in intended]), intended, strict=True)
    ]
    return payload, sent, [t - s for t, s in zip(intended, sent, strict=True)]


def send_with_momentum_correction(
    codec: Codec,
    update: list[torch.Tensor],
    residual: list[torch.Tensor] | None,
    velocity: list[torch.Tensor] | None,
    keeps: list[torch.Tensor | None],
    momentum: float,
    *,
    step: int,
    seed,
) -> tuple[Payload, list[torch.Tensor], list[torch.Tensor]]:
    """DGC's momentum correction: the device's own momentum ``u = m u + g`` is what accumulates.

    It sends ``C(e + u)``, keeps ``e' = e + u - D(C(e + u))`` and clears ``u`` where something was
    sent (momentum factor masking), so a coordinate's momentum restarts once it has been sent. With
    it the server should step plain SGD (``server_optimizer="fedavg"``): the momentum is here.
    """
    if velocity is None:
        velocity = [torch.zeros_like(u) for u in update]
    velocity = [
        _masked(momentum * v.to(u.device) + u, keep)
        for v, u, keep in zip(velocity, update, keeps, strict=True)
    ]
    payload, sent, residual = _send(codec, velocity, residual, keeps, step, seed)
    velocity = [torch.where(s != 0, 0, v) for v, s in zip(velocity, sent, strict=True)]
    return payload, residual, velocity


def send_downlink_with_feedback(
    codec: Codec, average: list[torch.Tensor], residual: list[torch.Tensor] | None, *, step: int, seed
) -> tuple[Payload, list[torch.Tensor]]:
    """The server's payload of ``average`` plus its residual where the average is non-zero."""
    intended, waiting = list(average), None
    if residual is not None:
        sent_where = [a != 0 for a in average]
        intended = [a + torch.where(w, e, 0) for a, e, w in zip(average, residual, sent_where, strict=True)]
        waiting = [torch.where(w, 0, e) for e, w in zip(residual, sent_where, strict=True)]
    payload, _, left = _send(codec, intended, None, None, step, seed)
    if waiting is not None:
        left = [r + w for r, w in zip(left, waiting, strict=True)]
    return payload, left


def _masked(tensor: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return tensor if keep is None else tensor * keep.to(tensor.dtype)
