"""What the server makes of a round's uploads: their mean, or a robust aggregate, after the mask check.

By default the server takes the weighted mean of the round's decoded updates from the transport's
running sum (:meth:`~lightning_fed.federation.transport.InProcess.server_sum`). With a robust
aggregator (:mod:`lightning_fed.federation.aggregators`) or the mask check it takes each update
(:meth:`~lightning_fed.federation.transport.InProcess.server_updates`), in device order.

**The mask check** (``enforce_mask``, Algorithm 1 only). There ``M(alpha)`` is a function of the
shared model, which the server holds as the devices received it, so the mask is public: a value
sent where it prunes can only come from a device that lies. The server zeroes every such value
before it aggregates, and counts them (``rejected_values``, per round and in total). Under the
paper's variant each device's mask depends on its own log_sigma2, which the server never sees, so
it cannot check (refused).

**Client-level DP** (``privacy``, :class:`~lightning_fed.privacy.DPFedAvg`): the uploads were
clipped on their way; the server noises their sum and divides by the expected number of
reporting devices, on the public mask's coordinates under Algorithm 1.

Example::

    >>> import torch
    >>> keep = torch.tensor([True, False, True])
    >>> screened, rejected = screen([torch.tensor([1.0, 5.0, 0.0])], [keep])
    >>> screened[0].tolist(), rejected
    ([1.0, 0.0, 0.0], 1)
"""

import torch

from lightning_fed.federation.aggregators import Aggregator, make_aggregator


def screen(update: list[torch.Tensor], keeps: list[torch.Tensor | None]) -> tuple[list[torch.Tensor], int]:
    """``update`` with every value outside its tensor's public mask zeroed, and how many there were."""
    out, rejected = [], 0
    for tensor, keep in zip(update, keeps, strict=True):
        if keep is None:
            out.append(tensor)
            continue
        keep = keep.reshape(-1).to(tensor.device)
        rejected += int(((tensor != 0) & ~keep).sum())
        out.append(torch.where(keep, tensor, torch.zeros((), dtype=tensor.dtype)))
    return out, rejected


class ServerAggregation:
    """The server's rule for a round (``aggregator``: a spec or an
    :class:`~lightning_fed.federation.aggregators.Aggregator`; None: the mean) and its figures:
    ``rejected_values`` (last round), ``total_rejected``, ``chosen`` (the devices Krum chose);
    ``privacy``: DP-FedAvg's server side (None: the exact mean), ``numels``: the upload's tensors'."""

    def __init__(self, aggregator=None, enforce_mask: bool = False, privacy=None) -> None:
        self.aggregator: Aggregator = make_aggregator(aggregator)
        self.enforce_mask = enforce_mask
        self.privacy = privacy
        self.numels: list[int] = []
        self.rejected_values = self.total_rejected = 0
        self.chosen: list[int] = []

    @property
    def needs_updates(self) -> bool:
        """Whether the server needs each device's update (else the transport's running sum serves)."""
        return self.aggregator.needs_updates or self.enforce_mask

    def average(self, transport, public_keeps=None, step: int = 0) -> tuple[list[torch.Tensor] | None, float]:
        """The round's update (None: nobody reported) and the weight behind it."""
        if self.privacy is not None:
            return self._private_average(transport, public_keeps, step)
        if not self.needs_updates:
            total, weight = transport.server_sum()
            return (None if total is None else [t / weight for t in total]), weight
        received = self._screened(transport.server_updates(), public_keeps)
        if not received:
            return None, 0.0
        updates, weights = [u for _, u, _ in received], [w for _, _, w in received]
        if self.aggregator.needs_updates:
            average = self.aggregator(updates)
            self.chosen = [received[i][0] for i in getattr(self.aggregator, "chosen", [])]
            return average, float(len(updates))
        return _weighted_mean(updates, weights), float(sum(weights))

    def _screened(self, received: list, public_keeps) -> list:
        """``received`` with the mask check's zeroes (if on), counted."""
        self.rejected_values = 0
        if not self.enforce_mask:
            return received
        screened = []
        for sender, update, weight in received:
            update, rejected = screen(update, public_keeps)
            self.rejected_values += rejected
            screened.append((sender, update, weight))
        self.total_rejected += self.rejected_values
        return screened

    def _private_average(self, transport, public_keeps, step: int) -> tuple[list[torch.Tensor], float]:
        """DP-FedAvg's noised average of the round's clipped uploads (every device's weight 1)."""
        if self.enforce_mask:
            updates = [u for _, u, _ in self._screened(transport.server_updates(), public_keeps)]
            total = [sum(tensors) for tensors in zip(*updates, strict=True)] if updates else None
        else:
            total, _ = transport.server_sum()
        average = self.privacy.average(total, self.numels, public_keeps, step)
        return average, self.privacy.expected

    def state_dict(self) -> dict:
        state = {"aggregator": self.aggregator.state_dict(), "total_rejected": self.total_rejected}
        if self.privacy is not None:
            state["privacy"] = self.privacy.state_dict()
        return state

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.aggregator.load_state_dict(state.get("aggregator", {}))
            self.total_rejected = int(state.get("total_rejected", 0))
            if self.privacy is not None:
                self.privacy.load_state_dict(state.get("privacy"))


def checked_server_aggregation(config, per_round: int, privacy=None) -> ServerAggregation:
    """The run's :class:`ServerAggregation`, its aggregator checked against ``per_round`` updates."""
    aggregation = ServerAggregation(config.aggregator, config.enforce_mask, privacy)
    try:
        aggregation.aggregator.check_round(per_round)
    except ValueError as error:
        raise ValueError(f"aggregator={config.aggregator!r}: {error}") from None
    return aggregation


def _weighted_mean(updates: list[list[torch.Tensor]], weights: list[float]) -> list[torch.Tensor]:
    total = sum(weights)
    return [
        sum(w * update[i] for update, w in zip(updates, weights, strict=True)) / total
        for i in range(len(updates[0]))
    ]
