"""Sparse variational dropout layers: ``LinearSVD``, ``Conv2dSVD`` and ``EmbeddingSVD``.

Each weight ``w_ij ~ N(theta_ij, sigma2_ij)``: ``weight`` is theta, ``log_sigma2`` is a new
parameter of the weight's shape, and ``log_alpha = log_sigma2 - log(theta^2)`` is the learned
dropout rate. Training uses the local reparameterization trick (Kingma et al. 2015): the layer
samples its *output* ``N(op(x, theta) + bias, op(x^2, sigma2))`` instead of the weights. Evaluation
is deterministic: ``op(x, theta * keep_mask()) + bias`` where ``keep_mask = log_alpha < threshold``.
The bias never enters the variance term.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_fed.defaults import DEFAULT_INIT_LOG_SIGMA2, DEFAULT_THRESHOLD
from lightning_fed.nn.kl import EPSILON, kl_approximation, log_alpha_of


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float, or raise if it is not a finite number.

    Example::

        >>> check_threshold(3)
        3.0
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return float(threshold)


class SparseVDMixin:
    """Adds ``log_sigma2``, ``log_alpha``, ``kl()`` and ``keep_mask()`` to a layer with ``weight``.

    Subclasses implement ``_op(x, weight, bias)``, the parent's deterministic operation.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_sparse_vd(self, threshold: float, init_log_sigma2: float) -> None:
        self.threshold = check_threshold(threshold)
        if not math.isfinite(init_log_sigma2):
            raise ValueError(f"init_log_sigma2 must be a finite number, got {init_log_sigma2!r}")
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, float(init_log_sigma2)))

    @property
    def log_alpha(self) -> torch.Tensor:
        """Log dropout rate of every weight, clipped to [-10, 10]."""
        return log_alpha_of(self.weight, self.log_sigma2)

    def kl(self) -> torch.Tensor:
        """Approximate KL(q || prior) summed over the layer's weights."""
        return kl_approximation(self.log_alpha).sum()

    @torch.no_grad()
    def keep_mask(self) -> torch.Tensor:
        """Boolean mask of the weights that are kept: ``log_alpha < threshold``."""
        return self.log_alpha < self.threshold

    def sampled_weight(self) -> torch.Tensor:
        """The weights themselves: one draw ``theta + sigma * eps`` in training, ``theta * M(alpha)``
        in evaluation. Recurrent layers use one draw for a whole mini-batch, every time step of it
        (:mod:`lightning_fed.nn.recurrent`), where the local reparameterization trick cannot apply."""
        if not self.training:
            return self.weight * self.keep_mask()
        return self.weight + torch.exp(0.5 * self.log_sigma2) * torch.randn_like(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._op(x, self.weight * self.keep_mask(), self.bias)
        mean = self._op(x, self.weight, self.bias)
        variance = self._op(x * x, torch.exp(self.log_sigma2), None)
        return mean + torch.sqrt(variance + EPSILON) * torch.randn_like(mean)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}"


class LinearSVD(SparseVDMixin, nn.Linear):
    """``nn.Linear`` with sparse variational dropout.

    Example::

        >>> layer = LinearSVD(4, 2).eval()
        >>> layer(torch.ones(3, 4)).shape
        torch.Size([3, 2])
        >>> layer.log_sigma2.shape == layer.weight.shape
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        threshold: float = DEFAULT_THRESHOLD,
        init_log_sigma2: float = DEFAULT_INIT_LOG_SIGMA2,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_sparse_vd(threshold, init_log_sigma2)

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)


class Conv2dSVD(SparseVDMixin, nn.Conv2d):
    """``nn.Conv2d`` with sparse variational dropout; stride, padding, dilation, groups all work.

    Example::

        >>> layer = Conv2dSVD(3, 8, kernel_size=3, padding=1, groups=1).eval()
        >>> layer(torch.ones(2, 3, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        threshold: float = DEFAULT_THRESHOLD,
        init_log_sigma2: float = DEFAULT_INIT_LOG_SIGMA2,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self._init_sparse_vd(threshold, init_log_sigma2)

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self._conv_forward(x, weight, bias)


class EmbeddingSVD(SparseVDMixin, nn.Embedding):
    """``nn.Embedding`` with sparse variational dropout: one draw of the table a mini-batch in
    training (a token has the same vector at every position of it), ``theta * M(alpha)`` in
    evaluation.

    Example::

        >>> table = EmbeddingSVD(5, 3).eval()
        >>> table(torch.tensor([[0, 4, 4]])).shape
        torch.Size([1, 3, 3])
    """

    bias = None

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        device=None,
        dtype=None,
        threshold: float = DEFAULT_THRESHOLD,
        init_log_sigma2: float = DEFAULT_INIT_LOG_SIGMA2,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self._init_sparse_vd(threshold, init_log_sigma2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.sampled_weight(), self.padding_idx)
