"""Secure aggregation: SecAgg+ over a round's uploads, the server seeing only their sum.

The names below are imported on first use (the cryptography libraries are needed only here).
"""

from lightning_fed._lazy import lazy_exports

_EXPORTS = {
    "SecAggAborted": "lightning_fed.secure.aborted",
    "SecAggOutcome": "lightning_fed.secure.secagg",
    "SecAggPlus": "lightning_fed.secure.secagg",
    "check_secagg": "lightning_fed.secure.options",
    "neighbour_graph": "lightning_fed.secure.graph",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
