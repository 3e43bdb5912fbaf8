"""The clients' SGD (``client_optimizer="sgd"``), on the module's learning-rate schedule.

Under local steps the devices train with the module's optimizer, so the module's scheduler (a
cosine over the epochs, say) sets the rate they use. With ``client_optimizer="sgd"`` they train
with this SGD instead; each of its groups keeps ``client_lr`` as its base and, at every step, is
scaled by the factor the module's scheduler has applied to the matching group of the module's
optimizer (its ``lr`` over its ``initial_lr``), so the schedule reaches the clients either way.
"""

import torch


class ClientSGD(torch.optim.SGD):
    """SGD over ``module_optimizer``'s groups at ``lr`` (default: each group's own), scheduled as it is.

    Example::

        >>> w = torch.nn.Parameter(torch.ones(1))
        >>> module = torch.optim.Adam([w], lr=0.01)
        >>> schedule = torch.optim.lr_scheduler.LambdaLR(module, lambda epoch: 0.5**epoch)
        >>> client = ClientSGD(module, lr=0.3)
        >>> schedule.step()
        >>> w.grad = torch.ones(1)
        >>> _ = client.step()
        >>> client.param_groups[0]["lr"], round(w.item(), 6)
        (0.15, 0.85)
    """

    def __init__(self, module_optimizer: torch.optim.Optimizer, lr: float | None = None):
        self.module_optimizer = module_optimizer
        groups = [
            {"params": g["params"], "lr": lr or g["lr"], "base_lr": lr or g["lr"]}
            for g in module_optimizer.param_groups
        ]
        super().__init__(groups)
        self.register_step_pre_hook(_follow_the_module_schedule)


def _follow_the_module_schedule(client: ClientSGD, args, kwargs) -> None:
    """Before each step: every group at ``base_lr`` times the module scheduler's factor of its match."""
    for mine, theirs in zip(client.param_groups, client.module_optimizer.param_groups, strict=True):
        factor = theirs["lr"] / theirs.get("initial_lr", theirs["lr"])  # exactly 1.0 unscheduled
        mine["lr"] = mine["base_lr"] * factor
