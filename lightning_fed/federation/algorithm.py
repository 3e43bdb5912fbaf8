"""``FederatedAlgorithm``: what happens in a round, as an object the strategy runs.

An algorithm answers four questions per round, the way Flower's ``Strategy``
(``configure_fit`` / ``aggregate_fit``) and pfl-research's ``FederatedAlgorithm`` do:

1. :meth:`~FederatedAlgorithm.configure_round`: which devices take part (a
   :class:`~lightning_fed.federation.rounds.Round`).
2. :meth:`~FederatedAlgorithm.send_model`: what the round's devices receive before they train
   (counted in the ledger), or None when they hold the model already (the paper's protocol).
3. :meth:`~FederatedAlgorithm.client_update`: what one device computes from what it received:
   its local steps and the tensors it uploads (encoded, counted and carried by the host).
4. :meth:`~FederatedAlgorithm.aggregate`: from the round's aggregate of the decoded uploads (their
   weighted mean, or a robust aggregator's, :mod:`lightning_fed.federation.server_aggregation`),
   the server's gradient (the server optimizer steps with it), or None to leave the model as is.

The strategy (:class:`~lightning_fed.strategy.FederatedStrategy`) is the *host*: it hosts the
devices (their states swapped in, :meth:`host.devices.hosting`), runs a device's forward and
backward through Lightning (:meth:`host.local_step`), encodes and carries uploads
(:meth:`host.upload`), sends downloads (:meth:`host.send_to_devices`), and keeps the ledger.
An algorithm is written against these and its own state only; a new one (SCAFFOLD, in
``modules/scaffold.py``) plugs in as ``FederatedStrategy(algorithm=...)``.
"""

from dataclasses import dataclass
from typing import Any

import torch

from lightning_fed.communication import Traffic
from lightning_fed.federation.rounds import Round


@dataclass
class ClientUpdate:
    """What one device's turn in a round produced: the module's output and loss of its last local
    step (for Lightning's logging), the flat tensors it uploads, and ``keeps``: per tensor, the
    flat ``M(alpha)`` its way masks it with (computed once, when the device computed its update;
    None: nothing is masked). The upload's way (:mod:`lightning_fed.federation.stages`) masks,
    compresses and encodes it."""

    output: Any
    loss: torch.Tensor
    update: list[torch.Tensor]
    keeps: list[torch.Tensor | None] | None = None


def dense_traffic(dense_numel: int, receivers: int, senders: int) -> Traffic:
    """The round's dense baseline: what dense distributed SGD would move (the model or a gradient
    to each receiver, a dense update from each sender), and how many devices received and sent.

    Example::

        >>> traffic = dense_traffic(dense_numel=10, receivers=4, senders=3)
        >>> traffic.dense_values, traffic.sampled, traffic.reported
        (70, 4, 3)
    """
    return Traffic(dense_values=(receivers + senders) * dense_numel, sampled=receivers, reported=senders)


class FederatedAlgorithm:
    """The base of every algorithm: the questions of a round, answered with the host's help.

    Subclasses override :meth:`client_update` and :meth:`aggregate`, and where they need to,
    :meth:`configure_round`, :meth:`send_model`, :meth:`server_optimizer` and the state methods.
    ``name`` is what the checkpoint records (a resume with another algorithm is refused);
    ``device_row_names`` name the model-sized lists of flat tensors (one per shared tensor) it keeps
    in a device's ``stages``, which its row then holds (in memory or on disk) and checkpoints.
    """

    name = "custom"
    device_row_names: tuple[str, ...] = ()

    def setup(self, host) -> None:
        """Called once the host knows the federation (devices, plan, seed), before the first round."""

    def upload_numels(self, host) -> list[int]:
        """The sizes of the flat tensors a device uploads: by default the shared parameters'."""
        return host.plan.numels

    def configure_round(self, host, step: int) -> Round:
        """The devices of round ``step``: the host's seeded schedule."""
        return host.schedule.round(step)

    def send_model(self, host, this_round: Round) -> list[torch.Tensor] | None:
        """What the round's devices receive before training, written into the model they train;
        None: they hold the model already."""
        return None

    def device_batches(self, host, source, device: int, state, batch_index: int) -> list:
        """The batches ``device`` trains on this round: its next one, from its shard's stream."""
        step = host.lightning_module.current_epoch * source.batches_per_pass(device) + batch_index
        return [source.batch(device, step)]

    def client_update(
        self, host, device: int, batches: list, start: list[torch.Tensor] | None
    ) -> ClientUpdate:
        """``device``'s computation this round (hosted: its state is in the model)."""
        raise NotImplementedError

    def after_client(self, host, start: list[torch.Tensor] | None) -> None:
        """Called after each device's turn; by default the next device starts from ``start``."""
        if start is not None:
            host.plan.write_parameters(host.lightning_module, start)

    def aggregate(self, host, this_round: Round, average, weight: float) -> list[torch.Tensor] | None:
        """The server's gradient from ``average`` (None: nobody reported), the round's aggregate of
        the decoded uploads, and the ``weight`` behind it; None leaves the model as it is."""
        raise NotImplementedError

    def server_optimizer(self, host, module_optimizer) -> torch.optim.Optimizer | None:
        """The optimizer of the server's step on the shared parameters; None: the module's."""
        return None

    def state_dict(self) -> dict:
        """The server's state a resumed run needs."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
