"""Federated data: datasets decoded once, partitions into device shards, the Lightning datamodule.

The names below are imported on first use (``datamodules.catalog`` alone needs no torch).
"""

from lightning_fed._lazy import lazy_exports

_EXPORTS = {
    "INFO": "datamodules.catalog",
    "DirichletPartition": "datamodules.partitions",
    "FederatedDataModule": "datamodules.federated",
    "IidPartition": "datamodules.partitions",
    "ShardPartition": "datamodules.partitions",
    "load_dataset": "datamodules.datasets",
    "make_partition": "datamodules.partitions",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
