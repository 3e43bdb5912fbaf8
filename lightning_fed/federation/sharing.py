"""``SharingPlan``: which tensors of a model travel, which are masked by ``M(alpha)``, which stay local."""

from dataclasses import dataclass

import torch
from torch import nn

from lightning_fed.nn import variational_layers


@dataclass(frozen=True)
class SharedTensor:
    """A parameter that devices upload (its gradient or delta) and the server sends back.

    ``mask_of`` names the variational layer whose ``keep_mask()`` masks it (None: unmasked);
    ``in_dense_baseline`` is False for what dense SGD would not send (a shared log_sigma2).
    """

    name: str
    numel: int
    mask_of: str | None
    in_dense_baseline: bool


class SharingPlan:
    """The one place that decides what a device sends.

    In the paper's variant (the default) theta and every ordinary parameter are shared, theta
    masked by its layer's ``M(alpha)``; log_sigma2 stays local to each device. With
    ``share_log_sigma2`` (Algorithm 1 proper) log_sigma2 is shared too, masked by the same mask.
    Buffers (batch-norm statistics) always stay local. The masks are taken from the model the
    plan is applied to, so they hold for a deep copy as well.

    Args:
        model: the model the devices train.
        share_log_sigma2: Algorithm 1 proper.
        mask: multiply theta (and a shared log_sigma2) by ``M(alpha)`` before it is sent.

    Example::

        >>> from lightning_fed.nn import variational
        >>> plan = SharingPlan(variational(nn.Sequential(nn.Linear(3, 2))))
        >>> [(t.name, t.numel, t.mask_of) for t in plan.shared], plan.local_parameters
        ([('0.weight', 6, '0'), ('0.bias', 2, None)], ['0.log_sigma2'])
    """

    def __init__(self, model: nn.Module, share_log_sigma2: bool = False, mask: bool = True) -> None:
        self.share_log_sigma2 = share_log_sigma2
        self.mask = mask
        layers = {f"{name}.weight": name for name, _ in variational_layers(model)}
        log_sigma2 = {f"{name}.log_sigma2": name for name, _ in variational_layers(model)}
        self.shared: list[SharedTensor] = []
        self.local_parameters: list[str] = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if name in log_sigma2 and not share_log_sigma2:
                self.local_parameters.append(name)
                continue
            layer = layers.get(name) or log_sigma2.get(name)
            self.shared.append(
                SharedTensor(name, param.numel(), layer if mask else None, name not in log_sigma2)
            )
        self.local_buffers: list[str] = [name for name, _ in model.named_buffers()]

    @property
    def numels(self) -> list[int]:
        return [t.numel for t in self.shared]

    @property
    def dense_numel(self) -> int:
        """Entries dense distributed SGD would send per device and direction."""
        return sum(t.numel for t in self.shared if t.in_dense_baseline)

    @torch.no_grad()
    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``M(alpha)`` of every masking layer, from the model's current log_alpha."""
        names = {t.mask_of for t in self.shared if t.mask_of is not None}
        return {name: layer.keep_mask() for name, layer in variational_layers(model) if name in names}

    def keeps(self, masks: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        """Per shared tensor, the flat mask of :meth:`masks` that masks it on its way (None: unmasked)."""
        return [None if t.mask_of is None else masks[t.mask_of].reshape(-1) for t in self.shared]

    @torch.no_grad()
    def gradients(self, model: nn.Module) -> list[torch.Tensor]:
        """Each shared parameter's gradient, flat (zeros where there is none): a device's update
        before its way masks it (:class:`~lightning_fed.federation.stages.MaskByAlpha`)."""
        out = []
        for tensor in self.shared:
            param = model.get_parameter(tensor.name)
            out.append((param.grad if param.grad is not None else torch.zeros_like(param)).reshape(-1))
        return out

    @torch.no_grad()
    def values(self, model: nn.Module) -> list[torch.Tensor]:
        """The shared parameters themselves, flat (the model the server sends a round's devices)."""
        return [model.get_parameter(t.name).detach().reshape(-1).clone() for t in self.shared]

    @torch.no_grad()
    def write_parameters(self, model: nn.Module, tensors: list[torch.Tensor]) -> None:
        """Set the shared parameters to ``tensors`` (flat, in the plan's order)."""
        for tensor, value in zip(self.shared, tensors, strict=True):
            param = model.get_parameter(tensor.name)
            param.copy_(value.reshape(param.shape))

    @torch.no_grad()
    def delta(self, model: nn.Module, start: list[torch.Tensor]) -> list[torch.Tensor]:
        """A device's update after local steps, as a pseudo-gradient: ``start - now``, flat (masked
        on its way by the ``M(alpha)`` of the round's start, so a weight pruned then is sent as
        zero whatever local momentum did to it).

        Example::

            >>> from lightning_fed.nn import variational
            >>> model = variational(nn.Sequential(nn.Linear(2, 1)))
            >>> plan = SharingPlan(model)
            >>> start = plan.values(model)
            >>> _ = model[0].bias.data.add_(0.5)
            >>> plan.delta(model, start)[1].tolist()
            [-0.5]
        """
        return [
            before - model.get_parameter(tensor.name).detach().reshape(-1)
            for tensor, before in zip(self.shared, start, strict=True)
        ]

    @torch.no_grad()
    def write_gradients(self, model: nn.Module, tensors: list[torch.Tensor]) -> None:
        """Set each shared parameter's gradient from the server's (decoded) message."""
        for tensor, value in zip(self.shared, tensors, strict=True):
            param = model.get_parameter(tensor.name)
            param.grad = value.to(param.device, param.dtype).reshape(param.shape)
