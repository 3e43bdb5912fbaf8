"""lightning-fed: communication-efficient federated learning with sparse variational dropout."""

from lightning_fed.communication import Codec, CommunicationLedger, Payload, SparseCodec, Traffic
from lightning_fed.federation import DeviceStates, SharingPlan, federated_mean
from lightning_fed.strategy import FederatedStrategy

__all__ = [
    "Codec",
    "CommunicationLedger",
    "DeviceStates",
    "FederatedStrategy",
    "Payload",
    "SharingPlan",
    "SparseCodec",
    "Traffic",
    "federated_mean",
]
__version__ = "0.2.0"
