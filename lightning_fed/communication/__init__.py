"""Messages as real bytes: codecs (payload in, payload out) and the ledger of payload lengths."""

from lightning_fed.communication.codecs import ENCODINGS, Codec, Payload, SparseCodec
from lightning_fed.communication.ledger import VALUE_BYTES, CommunicationLedger, Traffic

__all__ = ["ENCODINGS", "VALUE_BYTES", "Codec", "CommunicationLedger", "Payload", "SparseCodec", "Traffic"]
