"""The server's optimizers of the FedAvg family (Reddi et al., "Adaptive Federated Optimization").

The server treats the negative average of the devices' model deltas as a gradient (the
*pseudo-gradient* ``g = -mean_i(x_i - x)``) and steps the global model with it:

- ``fedavg``: SGD, ``x <- x - lr * g``; with lr 1 the global model becomes the devices' average.
- ``fedavgm``: SGD with momentum.
- ``fedadam`` / ``fedyogi`` / ``fedadagrad``: adaptive steps with the second moment ``v`` kept as
  Adam, Yogi or Adagrad keep it, ``x <- x - lr * m / (sqrt(v) + tau)``, no bias correction.
"""

import torch

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
_DEFAULT_LR = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 0.01, "fedyogi": 0.01, "fedadagrad": 0.01}


class AdaptiveServerOptimizer(torch.optim.Optimizer):
    """FedAdam, FedYogi and FedAdagrad: one optimizer, three rules for the second moment.

    Example::

        >>> x = torch.nn.Parameter(torch.zeros(2))
        >>> opt = AdaptiveServerOptimizer([x], rule="adam", lr=0.1, betas=(0.0, 0.0), tau=0.0)
        >>> x.grad = torch.tensor([2.0, -0.5])
        >>> opt.step()
        >>> x.data.tolist()  # lr * g / |g|: a sign step
        [-0.10000000149011612, 0.10000000149011612]
    """

    RULES = ("adam", "yogi", "adagrad")

    def __init__(self, params, rule: str = "adam", lr: float = 0.01, betas=(0.9, 0.99), tau: float = 1e-3):
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {', '.join(self.RULES)}, got {rule!r}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "tau": tau, "rule": rule})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["m"] = torch.zeros_like(param)
                    state["v"] = torch.zeros_like(param)
                m, v = state["m"], state["v"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                square = grad * grad
                if group["rule"] == "adam":
                    v.mul_(beta2).add_(square, alpha=1 - beta2)
                elif group["rule"] == "yogi":
                    v.sub_((1 - beta2) * square * torch.sign(v - square))
                else:
                    v.add_(square)
                param.sub_(group["lr"] * m / (v.sqrt() + group["tau"]))
        return loss


def server_optimizer(name: str, params, lr: float | None = None, momentum: float = 0.9):
    """The server optimizer ``name`` over ``params`` (lr defaults: 1 for SGD, 0.01 adaptive).

    Example::

        >>> x = torch.nn.Parameter(torch.ones(1))
        >>> opt = server_optimizer("fedavg", [x])
        >>> x.grad = torch.tensor([0.25])  # the devices moved x by -0.25 on average
        >>> opt.step(); x.item()
        0.75
    """
    if name not in SERVER_OPTIMIZERS:
        raise ValueError(f"server optimizer must be one of {', '.join(SERVER_OPTIMIZERS)}, got {name!r}")
    lr = _DEFAULT_LR[name] if lr is None else lr
    if not lr > 0:
        raise ValueError(f"server lr must be > 0, got {lr!r}")
    if name == "fedavg":
        return torch.optim.SGD(params, lr=lr)
    if name == "fedavgm":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    return AdaptiveServerOptimizer(params, rule=name.removeprefix("fed"), lr=lr)
