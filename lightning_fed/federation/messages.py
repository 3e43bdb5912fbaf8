"""Typed messages: what travels between the devices and the server, and how a receiver reads it.

A :class:`Message` is a record of its kind, its sender (a device, or :data:`SERVER`), the round
(the training step) and its payload's bytes, with the weight its sender's update carries in the
average. Nothing else travels: the receiver decodes the bytes with the codec it knows for the
kind, and counts from the bytes alone what the ledger records (:func:`received_traffic`). The
transports (:mod:`lightning_fed.federation.transport`) carry messages and are the only writers
of the ledger.

Example::

    >>> import torch
    >>> from lightning_fed.communication import SparseCodec
    >>> codec = SparseCodec()
    >>> message = Message(UPDATE, sender=3, round=0, payload=codec.encode([torch.tensor([0.0, 2.0])]))
    >>> tensors, traffic = read(message, codec, [2])
    >>> tensors[0].tolist(), traffic.upload, traffic.upload_bytes
    ([0.0, 2.0], 1, 10)
"""

from dataclasses import dataclass

from lightning_fed.communication import Codec, Payload, Traffic

SERVER = -1  # the sender of the server's messages

UPDATE = "update"  # a device's update (a gradient, or a model delta as a pseudo-gradient)
AVERAGE = "average"  # the server's average of the round's updates (the paper's protocol)
MODEL = "model"  # the server's model, or its change since the last one (FedAvg rounds)


@dataclass(frozen=True)
class Message:
    """One message: ``kind`` (:data:`UPDATE`, :data:`AVERAGE`, :data:`MODEL` or an algorithm's
    own), ``sender`` (a device, or :data:`SERVER`), ``round``, ``payload`` and ``weight`` (of an
    update in the server's weighted average)."""

    kind: str
    sender: int
    round: int
    payload: Payload
    weight: float = 1.0

    def __len__(self) -> int:
        return len(self.payload)


def read(message: Message, codec: Codec, numels: list[int], receivers: int = 1):
    """What a receiver reads of ``message``: its tensors, and its traffic counted from its bytes
    (an update once; a server's message once per receiving device)."""
    tensors, values = codec.read(message.payload, numels)
    return tensors, received_traffic(message, values, receivers)


def received_traffic(message: Message, values: int, receivers: int = 1) -> Traffic:
    """The ledger's line of ``message``, which carried ``values`` values, read by ``receivers``."""
    if message.sender == SERVER:
        return Traffic(download=receivers * values, download_bytes=receivers * len(message))
    return Traffic(upload=values, upload_bytes=len(message))
