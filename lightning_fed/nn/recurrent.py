"""An LSTM whose matrices are ``nn.Linear`` layers, so that :func:`~lightning_fed.nn.variational`
makes it sparse variational (Lobacheva, Chirkova and Vetrov, "Bayesian Sparsification of
Recurrent Neural Networks", 2017).

Each layer ``l`` has an input-to-hidden ``ih[l]`` (``4H x I``, with the bias) and a
hidden-to-hidden ``hh[l]`` (``4H x H``) matrix, gates in PyTorch's order (input, forget, cell,
output). Plain, it computes what ``nn.LSTM`` does. Variational, every matrix carries
log_sigma2, KL, ``M(alpha)`` and ``keep_mask()`` like the other layers, and what is sampled when
is the paper's: the local reparameterization trick does not apply to weights used at every time
step, so a forward pass in training draws each matrix ``theta + sigma * eps`` once a sequence
(``noise="sequence"``: each sequence its own draw, shared by its time steps, as Lobacheva et al.
describe) or once a mini-batch (``noise="batch"``, the default: one draw shared by every sequence
and time step of it, one fused kernel call instead of one a sequence, noisier gradients);
evaluation uses ``theta * M(alpha)``. An :class:`~lightning_fed.nn.EmbeddingSVD` before it draws
its table once a mini-batch.

Example::

    >>> lstm = LSTM(input_size=3, hidden_size=4, num_layers=2)
    >>> out, (h, c) = lstm(torch.zeros(5, 7, 3))  # batch 5, 7 time steps
    >>> out.shape, h.shape, c.shape
    (torch.Size([5, 7, 4]), torch.Size([2, 5, 4]), torch.Size([2, 5, 4]))
"""

import math

import torch
from torch import nn

from lightning_fed.nn.layers import SparseVDMixin

NOISE = ("batch", "sequence")  # what one draw of the matrices serves in training


def weight_of(layer: nn.Linear) -> torch.Tensor:
    """The matrix a forward pass uses: one draw of a variational layer's weights, else the weights."""
    return layer.sampled_weight() if isinstance(layer, SparseVDMixin) else layer.weight


class LSTM(nn.Module):
    """A batch-first LSTM of ``num_layers`` layers; see the module docstring."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, noise: str = "batch") -> None:
        super().__init__()
        if min(input_size, hidden_size, num_layers) < 1:
            raise ValueError(
                f"LSTM sizes must be >= 1, got input_size={input_size}, hidden_size={hidden_size}, "
                f"num_layers={num_layers}"
            )
        if noise not in NOISE:
            raise ValueError(f"noise must be one of {', '.join(NOISE)}, got {noise!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.noise = noise
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.ih = nn.ModuleList(nn.Linear(size, 4 * hidden_size) for size in sizes)
        self.hh = nn.ModuleList(nn.Linear(hidden_size, 4 * hidden_size, bias=False) for _ in sizes)
        bound = 1 / math.sqrt(hidden_size)  # nn.LSTM's initialisation
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)
        # torch's LSTM, not a submodule: only its kernel is used, with the matrices of each pass
        object.__setattr__(self, "_kernel", nn.LSTM(input_size, hidden_size, num_layers, batch_first=True))

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` of shape (batch, time, input_size) -> the last layer's outputs (batch, time,
        hidden_size) and the final ``(h, c)``, each (num_layers, batch, hidden_size). The
        recurrence is torch's fused LSTM kernel, run with this pass's matrices."""
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        variational = any(isinstance(m, SparseVDMixin) for m in [*self.ih, *self.hh])
        if self.noise == "sequence" and self.training and variational and x.shape[0] > 1:
            runs = [
                self(x[b : b + 1], (state[0][:, b : b + 1], state[1][:, b : b + 1])) for b in range(len(x))
            ]
            outputs = torch.cat([out for out, _ in runs])
            return outputs, (torch.cat([h for _, (h, _) in runs], 1), torch.cat([c for _, (_, c) in runs], 1))
        weights = {}
        for layer, (ih, hh) in enumerate(zip(self.ih, self.hh, strict=True)):
            weights[f"weight_ih_l{layer}"] = weight_of(ih)
            weights[f"weight_hh_l{layer}"] = weight_of(hh)
            weights[f"bias_ih_l{layer}"] = ih.bias
            weights[f"bias_hh_l{layer}"] = torch.zeros_like(ih.bias)  # one bias a gate: ih's
        return torch.func.functional_call(self._kernel, weights, (x, state))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, noise={self.noise}"
