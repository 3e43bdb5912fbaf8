"""Messages as real bytes: codecs (payload in, payload out) and the ledger of payload lengths."""

from lightning_fed.communication.codecs import ENCODINGS, Codec, Payload, SparseCodec
from lightning_fed.communication.ledger import VALUE_BYTES, CommunicationLedger, Traffic
from lightning_fed.communication.spec import default_download, make_codec
from lightning_fed.communication.topk import TopK
from lightning_fed.communication.values import QSGD, Float16, Float32, Sign, ValueCoder

__all__ = [
    "ENCODINGS", "QSGD", "VALUE_BYTES", "Codec", "CommunicationLedger", "Float16", "Float32", "Payload",
    "Sign", "SparseCodec", "TopK", "Traffic", "ValueCoder", "default_download", "make_codec",
]  # fmt: skip
