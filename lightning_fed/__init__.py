"""lightning-fed: communication-efficient federated learning with sparse variational dropout."""

from lightning_fed.communication import CommunicationLedger, Traffic
from lightning_fed.strategy import FederatedStrategy

__all__ = ["CommunicationLedger", "FederatedStrategy", "Traffic"]
__version__ = "0.1.0"
