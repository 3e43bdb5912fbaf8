"""Worker momentum: each device sends its own running average of its updates, not the update.

Karimireddy, He and Jaggi ("Learning from History for Byzantine Robust Optimization", ICML 2021)
pair centered clipping with momentum kept by each worker,
``m = beta * m + (1 - beta) * u``, and have the worker send ``m``: averaging over its own past
shrinks the spread of the honest messages by about ``sqrt((1 - beta) / (1 + beta))`` while their
mean moves little, so an attack that hides inside the honest spread ("a little is enough",
inner-product manipulation) has less room, and a robust rule throws less of the honest signal
away. The momentum is the device's state (checkpointed with it); it moves only in the rounds the
device takes part in. Under Algorithm 1 it is masked by the update's ``M(alpha)``, so a pruned
weight's momentum is dropped and never sent.

The stage comes right after the masking, before error feedback and the codec, so error feedback
compresses the momentum, and an attacker's stage (last on the way) replaces it.

Example::

    >>> from lightning_fed.communication import make_codec
    >>> from lightning_fed.federation.stages import Sending, Way
    >>> way, state = Way([WorkerMomentum(0.5)], make_codec(None)), {}
    >>> for step in range(3):
    ...     sent = way.send([torch.tensor([4.0, -2.0])], Sending(state, step=step, seed=0))
    ...     print(sent.decoded()[0].tolist())
    [2.0, -1.0]
    [3.0, -1.5]
    [3.5, -1.75]
"""

import torch

from lightning_fed.federation.stages import Stage, masked


class WorkerMomentum(Stage):
    """A device sends ``m = keep * (beta * m + (1 - beta) * u)`` and keeps ``m``."""

    state_names = ("momentum",)

    def __init__(self, beta: float) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < 1:
            raise ValueError(f"worker_momentum must be a number in (0, 1), got {beta!r}")
        self.beta = float(beta)

    def __repr__(self) -> str:
        return f"WorkerMomentum({self.beta:g})"

    def __call__(self, tensors, sending, rest):
        momentum, keeps = sending.state.get("momentum"), sending.keep_of(len(tensors))
        if momentum is None:  # the first message starts from zero, as the paper's m_0 = 0
            momentum = [torch.zeros_like(u) for u in tensors]
        momentum = [
            masked(self.beta * m.to(u.device) + (1 - self.beta) * u, keep)
            for m, u, keep in zip(momentum, tensors, keeps, strict=True)
        ]
        sending.state["momentum"] = momentum
        return rest(momentum)
