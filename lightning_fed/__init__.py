"""lightning-fed: communication-efficient federated learning with sparse variational dropout.

The names below are imported on first use; ``from lightning_fed import FederatedStrategy`` (or
any import of ``lightning_fed.strategy``) also registers ``Trainer(strategy="federated")``.
"""

from lightning_fed._lazy import lazy_exports

_EXPORTS = {
    "Codec": "lightning_fed.communication",
    "CommunicationLedger": "lightning_fed.communication",
    "DeviceStates": "lightning_fed.federation",
    "FederatedStrategy": "lightning_fed.strategy",
    "Payload": "lightning_fed.communication",
    "SharingPlan": "lightning_fed.federation",
    "SparseCodec": "lightning_fed.communication",
    "Traffic": "lightning_fed.communication",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__version__ = "0.2.0"
