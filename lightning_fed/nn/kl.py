"""KL divergence of sparse variational dropout (Molchanov, Ashukha, Vetrov, ICML 2017).

The prior is the log-uniform prior, the posterior ``N(theta, alpha * theta^2)``. The KL has no
closed form; Molchanov et al. fit the approximation

    -KL ~= k1 * sigmoid(k2 + k3 * log_alpha) - 0.5 * softplus(-log_alpha) - k1

with k1 = 0.63576, k2 = 1.87320, k3 = 1.48695 (eq. 14 of arXiv 1701.05369; the federated
paper's eq. 3 is the same formula with rounded constants).
"""

import math

import torch
import torch.nn.functional as F

K1 = 0.63576
K2 = 1.87320
K3 = 1.48695

LOG_ALPHA_MIN = -10.0
LOG_ALPHA_MAX = 10.0
EPSILON = 1e-8


def log_alpha_of(theta: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """``log_alpha = log_sigma2 - log(theta^2 + 1e-8)``, clipped to [-10, 10].

    Example::

        >>> log_alpha_of(torch.tensor([2.0, 1e-6]), torch.tensor([0.0, 0.0]))
        tensor([-1.3863, 10.0000])
    """
    log_alpha = log_sigma2 - torch.log(theta * theta + EPSILON)
    return torch.clamp(log_alpha, LOG_ALPHA_MIN, LOG_ALPHA_MAX)


def kl_approximation(log_alpha: torch.Tensor) -> torch.Tensor:
    """Elementwise approximate KL(q || p) for each weight, numerically stable.

    ``softplus(-x)`` is ``log1p(exp(-x))`` computed without overflow.

    Example::

        >>> kl_approximation(torch.tensor([-10.0, 0.0, 10.0])).round(decimals=4)
        tensor([5.6358, 0.4312, 0.0000])
    """
    return K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


def kl_reference(log_alpha: float) -> float:
    """The same approximation in plain Python, for checking the tensor version.

    Example::

        >>> round(kl_reference(0.0), 4)
        0.4312
    """
    sigmoid = 1.0 / (1.0 + math.exp(-(K2 + K3 * log_alpha)))
    return K1 - K1 * sigmoid + 0.5 * math.log1p(math.exp(-log_alpha))
