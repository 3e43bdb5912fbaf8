"""Alpha-thresholded gradient masking: the heart of the paper's Algorithm 1 (line 4).

Each device multiplies the gradient of every theta by ``M(alpha)``: 0 where
``log_alpha >= threshold``, else 1. The multiplication is a tensor hook on the parameter, so it
runs inside autograd, *before* DDP's reducer sees the gradient (``on_after_backward`` would be
too late: DDP has already synchronised by then).
"""

import torch
from torch import nn

from lightning_fed.nn.convert import variational_layers


class GradientMasker:
    """Masks the gradients of the variational layers of ``model`` with ``M(alpha)``.

    Call :meth:`refresh` at the start of every step: the masks of a step come from log_alpha
    *before* that step's update. :attr:`masks` holds them (``{layer name: bool tensor}``) so a
    strategy or a callback can count what the step will send.

    Args:
        model: a model with variational layers.
        mask_log_sigma2: also mask the log_sigma2 gradients (Algorithm 1 proper, where they are
            communicated); in the paper's variant they stay local and unmasked.
        enabled: when False, gradients pass unchanged (the masks are still computed).

    Example::

        >>> from lightning_fed.nn import LinearSVD
        >>> layer = LinearSVD(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, 1e-4]]))
        ...     _ = layer.log_sigma2.fill_(-10.0)
        >>> masker = GradientMasker(layer)
        >>> masker.refresh()
        >>> layer.eval()(torch.ones(1, 2)).sum().backward()
        >>> layer.weight.grad
        tensor([[1., 0.]])
    """

    def __init__(self, model: nn.Module, mask_log_sigma2: bool = False, enabled: bool = True):
        self.layers = dict(variational_layers(model))
        self.mask_log_sigma2 = mask_log_sigma2
        self.enabled = enabled
        self.masks: dict[str, torch.Tensor] = {}
        self._handles = []
        for name, layer in self.layers.items():
            self._handles.append(layer.weight.register_hook(self._hook_for(name)))
            if mask_log_sigma2:
                self._handles.append(layer.log_sigma2.register_hook(self._hook_for(name)))

    def _hook_for(self, name: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            if not self.enabled:
                return grad
            if name not in self.masks:
                self.refresh()
            return grad * self.masks[name]

        return hook

    @torch.no_grad()
    def refresh(self) -> None:
        """Take the masks of this step from the layers' current log_alpha."""
        self.masks = {name: layer.keep_mask() for name, layer in self.layers.items()}

    def kept(self) -> int:
        """Number of theta entries the current masks keep.

        Example::

            >>> from lightning_fed.nn import LinearSVD
            >>> masker = GradientMasker(LinearSVD(3, 2))
            >>> masker.refresh()
            >>> masker.kept()
            6
        """
        return sum(int(mask.sum()) for mask in self.masks.values())

    def remove(self) -> None:
        """Remove the hooks; gradients flow unmasked afterwards."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
