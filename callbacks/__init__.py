"""Reusable Lightning callbacks; none needs the rest of lightning-fed."""

from callbacks.communication_budget import CommunicationBudget
from callbacks.communication_monitor import CommunicationMonitor
from callbacks.federated_evaluation import FederatedEvaluation
from callbacks.kl_warmup import KLWarmup
from callbacks.privacy_monitor import PrivacyMonitor
from callbacks.robustness_monitor import RobustnessMonitor
from callbacks.run_checkpoint import RunCheckpoint
from callbacks.run_progress import RunProgressBar
from callbacks.sparse_export import SparseModelExport, load_sparse_state_dict
from callbacks.sparsity_monitor import SparsityMonitor, kept_weights

__all__ = [
    "CommunicationBudget",
    "CommunicationMonitor",
    "FederatedEvaluation",
    "KLWarmup",
    "PrivacyMonitor",
    "RobustnessMonitor",
    "RunCheckpoint",
    "RunProgressBar",
    "SparseModelExport",
    "SparsityMonitor",
    "kept_weights",
    "load_sparse_state_dict",
]
