"""An LSTM whose matrices are ``nn.Linear`` layers, so that :func:`~lightning_fed.nn.variational`
makes it sparse variational (Lobacheva, Chirkova and Vetrov, "Bayesian Sparsification of
Recurrent Neural Networks", 2017).

Each layer ``l`` has an input-to-hidden ``ih[l]`` (``4H x I``, with the bias) and a
hidden-to-hidden ``hh[l]`` (``4H x H``) matrix, gates in PyTorch's order (input, forget, cell,
output). Plain, it computes what ``nn.LSTM`` does. Variational, every matrix carries
log_sigma2, KL, ``M(alpha)`` and ``keep_mask()`` like the other layers, and what is sampled when
is the paper's: the local reparameterization trick does not apply to weights used at every time
step, so a forward pass in training draws each matrix once, ``theta + sigma * eps``, and that draw
serves every sequence and every time step of the mini-batch; evaluation uses ``theta * M(alpha)``.

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


def weight_of(layer: nn.Linear) -> torch.Tensor:
    """The matrix a forward pass uses: one draw of a variational layer's weights, else the weights."""
    return layer.sampled_weight() if isinstance(layer, SparseVDMixin) else layer.weight


class LSTM(nn.Module):
    """A batch-first LSTM of ``num_layers`` layers; see the module docstring."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        if min(input_size, hidden_size, num_layers) < 1:
            raise ValueError(
                f"LSTM sizes must be >= 1, got input_size={input_size}, hidden_size={hidden_size}, "
                f"num_layers={num_layers}"
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.ih = nn.ModuleList(nn.Linear(size, 4 * hidden_size) for size in sizes)
        self.hh = nn.ModuleList(nn.Linear(hidden_size, 4 * hidden_size, bias=False) for _ in sizes)
        bound = 1 / math.sqrt(hidden_size)  # nn.LSTM's initialisation
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` of shape (batch, time, input_size) -> the last layer's outputs (batch, time,
        hidden_size) and the final ``(h, c)``, each (num_layers, batch, hidden_size)."""
        batch = x.shape[0]
        if state is None:
            zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
            state = (zeros, zeros)
        finals_h, finals_c = [], []
        for layer in range(self.num_layers):
            x, (h, c) = self._layer(x, layer, state[0][layer], state[1][layer])
            finals_h.append(h)
            finals_c.append(c)
        return x, (torch.stack(finals_h), torch.stack(finals_c))

    def _layer(self, x, layer: int, h, c):
        ih, hh = self.ih[layer], self.hh[layer]
        from_input = nn.functional.linear(x, weight_of(ih), ih.bias)  # every time step at once
        recurrent = weight_of(hh).t()
        outputs = []
        for t in range(x.shape[1]):
            i, f, g, o = (from_input[:, t] + h @ recurrent).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first=True"
