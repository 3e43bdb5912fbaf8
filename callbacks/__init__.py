"""Reusable Lightning callbacks; none needs the rest of lightning-fed."""

from callbacks.communication_monitor import CommunicationMonitor
from callbacks.kl_warmup import KLWarmup
from callbacks.sparsity_monitor import SparsityMonitor, kept_weights

__all__ = ["CommunicationMonitor", "KLWarmup", "SparsityMonitor", "kept_weights"]
