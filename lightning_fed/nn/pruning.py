"""What pruned a weight: its learned noise (log_sigma2 risen) or its mean (theta) shrunk to zero.

A weight is pruned when ``log_alpha = log_sigma2 - log(theta^2 + 1e-8)`` passes the threshold.
Sparse variational dropout means the first: the model learns which weights tolerate noise. With
Adam each parameter moves about one learning rate a step, so in a short federated run (27 steps
an epoch at 16 devices x 128) log_sigma2 can barely leave its initial value, and the second is
what prunes. ``pruned_by_theta`` counts the pruned weights that theta alone would prune, with
log_sigma2 still at its initial value.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from lightning_fed.nn.kl import log_alpha_of

QUANTILES = (0.01, 0.5, 0.99)
_SAMPLE = 1_000_000  # torch.quantile's input limit is 2**24; a layer's quantiles from at most this many


@dataclass(frozen=True)
class LayerPruning:
    """One layer: its weights, those kept, log_sigma2's 1 / 50 / 99 % quantiles, pruned by theta."""

    total: int
    kept: int
    log_sigma2_quantiles: tuple[float, float, float]
    pruned_by_theta: int

    @property
    def pruned(self) -> int:
        return self.total - self.kept


@torch.no_grad()
def layer_pruning(
    theta: torch.Tensor, log_sigma2: torch.Tensor, threshold: float, init_log_sigma2: float
) -> LayerPruning:
    """The pruning of one layer's weights.

    Example::

        >>> theta = torch.tensor([0.5, 1e-4, 0.5])
        >>> log_sigma2 = torch.tensor([-10.0, -10.0, 4.0])  # the third is pruned by its noise
        >>> report = layer_pruning(theta, log_sigma2, 3.0, -10.0)
        >>> report.kept, report.pruned, report.pruned_by_theta
        (1, 2, 1)
    """
    pruned = log_alpha_of(theta, log_sigma2) > threshold
    pruned_at_init = log_alpha_of(theta, torch.full_like(log_sigma2, init_log_sigma2)) > threshold
    values = log_sigma2.detach().flatten().float()
    if values.numel() > _SAMPLE:
        values = values[torch.linspace(0, values.numel() - 1, _SAMPLE).long()]
    quantiles = torch.quantile(values, torch.tensor(QUANTILES))
    return LayerPruning(
        total=theta.numel(),
        kept=int((~pruned).sum()),
        log_sigma2_quantiles=tuple(round(float(q), 2) for q in quantiles),
        pruned_by_theta=int((pruned & pruned_at_init).sum()),
    )


def pruning_report(
    state: Mapping[str, torch.Tensor], threshold: float, init_log_sigma2: float
) -> dict[str, LayerPruning]:
    """``layer_pruning`` of every variational layer of a network state dict (``X.weight`` beside
    ``X.log_sigma2``), by layer name.

    Example::

        >>> state = {"0.weight": torch.tensor([1e-4, 0.5]), "0.log_sigma2": torch.full((2,), -10.0)}
        >>> pruning_report(state, 3.0, -10.0)["0"].pruned_by_theta
        1
    """
    suffix = ".log_sigma2"
    names = [key[: -len(suffix)] for key in state if key.endswith(suffix)]
    if not names:
        raise ValueError("the state has no log_sigma2: it is not a sparse variational dropout model")
    return {
        name: layer_pruning(state[f"{name}.weight"], state[f"{name}{suffix}"], threshold, init_log_sigma2)
        for name in names
    }
