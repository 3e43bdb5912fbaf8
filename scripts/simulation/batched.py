"""The plain loop's clients trained all at once: ``torch.func.vmap`` over their stacked models.

The same FedAvg as ``plain.py`` (K sampled uniformly without replacement, each one local epoch of
SGD over its shard in a shuffled order, the server averaging the models), with the round's K
clients run as one batched computation: their models stacked (each tensor K times, one row a
client), local step ``s`` of every client one ``vmap`` of ``grad`` over the stack. A client whose shard
has fewer batches, or a shorter last one, is padded with examples of weight zero, which change
neither its loss nor its gradient; a step of zero gradient leaves its model as it was. The
clients' orders are drawn from the same generator in the same order as ``plain.py`` draws them,
so both compute the same models (to float rounding: batched kernels sum in another order).

Usage: python scripts/simulation/batched.py CLIENTS [--rounds 4] [--per-round 10] [--device cpu]
"""

import copy
import math

import numpy as np
import torch
from common import arguments, timed_rounds
from torch.func import functional_call, grad, vmap


def padded_steps(
    orders: list[np.ndarray], images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per local step: the K clients' images, labels and example weights (1 real, 0 padding).

    Example::

        >>> images, labels = torch.arange(5.0).view(5, 1), torch.arange(5)
        >>> steps = padded_steps([np.array([4, 0, 1]), np.array([2])], images, labels, batch_size=2)
        >>> [(x.shape, w.tolist()) for x, _, w in steps]
        [(torch.Size([2, 2, 1]), [[1.0, 1.0], [1.0, 0.0]]), (torch.Size([2, 2, 1]), [[1.0, 0.0], [0.0, 0.0]])]
        >>> steps[0][1].tolist(), steps[1][1].tolist()
        ([[4, 0], [2, 0]], [[1, 0], [0, 0]])
    """
    count = max(math.ceil(len(order) / batch_size) for order in orders)
    steps = []
    for step in range(count):
        index = torch.zeros(len(orders), batch_size, dtype=torch.long)
        weight = torch.zeros(len(orders), batch_size, device=images.device)
        for client, order in enumerate(orders):
            part = torch.from_numpy(order[step * batch_size : (step + 1) * batch_size])
            index[client, : len(part)] = part
            weight[client, : len(part)] = 1.0
        steps.append((images[index], labels[index], weight))
    return steps


def stacked(tensor: torch.Tensor, clients: int) -> torch.Tensor:
    """``clients`` copies of ``tensor``, one per row: ``clients x tensor.shape``."""
    return tensor.detach().unsqueeze(0).repeat(clients, *([1] * tensor.dim()))


def batched_local_epochs(
    model: torch.nn.Module, steps: list, lr: float, clients: int
) -> dict[str, torch.Tensor]:
    """Every client's model after its local epoch, stacked: ``{name: K x shape}``, from ``model``."""
    params = {name: stacked(value, clients) for name, value in model.named_parameters()}
    buffers = {name: stacked(value, clients) for name, value in model.named_buffers()}
    base = copy.deepcopy(model).to("meta")  # the architecture only; the values come from the stack

    def loss(p, b, x, y, w):
        logits = functional_call(base, (p, b), (x,))
        per_example = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return (w * per_example).sum() / w.sum().clamp_min(1.0)  # the mean over the real examples

    gradient = vmap(grad(loss))
    for x, y, w in steps:
        grads = gradient(params, buffers, x, y, w)
        params = {name: value - lr * grads[name] for name, value in params.items()}
    return params


def main() -> None:
    args = arguments(device=True)

    def fedavg_round(model, shards, images, labels, rng) -> None:
        orders = [rng.permutation(shard) for shard in shards]  # as plain.py draws them, client by client
        steps = padded_steps(orders, images, labels, args.batch_size)
        trained = batched_local_epochs(model, steps, args.lr, len(shards))
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(trained[name].mean(0))

    timed_rounds(args, fedavg_round)


if __name__ == "__main__":
    main()
