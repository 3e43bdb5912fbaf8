"""Federated data: datasets decoded once, partitions into device shards, the Lightning datamodule."""

from datamodules.datasets import INFO, load_dataset
from datamodules.federated import FederatedDataModule
from datamodules.partitions import DirichletPartition, IidPartition, ShardPartition, make_partition

__all__ = [
    "INFO",
    "DirichletPartition",
    "FederatedDataModule",
    "IidPartition",
    "ShardPartition",
    "load_dataset",
    "make_partition",
]
