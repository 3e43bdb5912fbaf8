"""Client-level differential privacy: DP-FedAvg's clipping, the server's noise, the accountant.

The names below are imported on first use (the accountant's library takes a while to import).
"""

from lightning_fed._lazy import lazy_exports

_EXPORTS = {
    "ClipToNorm": "lightning_fed.privacy.clipping",
    "DPFedAvg": "lightning_fed.privacy.dp_fedavg",
    "GaussianNoise": "lightning_fed.privacy.noise",
    "PrivacyAccountant": "lightning_fed.privacy.accountant",
    "check_privacy": "lightning_fed.privacy.options",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
