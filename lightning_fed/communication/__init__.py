"""Counting communication: sparse encodings, their byte sizes, and the ledger."""

from lightning_fed.communication.encoding import decode_sum, encode, paper_bytes, wire_bytes
from lightning_fed.communication.ledger import CommunicationLedger, Traffic, bucket_traffic

__all__ = [
    "CommunicationLedger",
    "Traffic",
    "bucket_traffic",
    "decode_sum",
    "encode",
    "paper_bytes",
    "wire_bytes",
]
