"""The baseline: a plain single-process PyTorch loop doing exactly the clients' work of FedAvg.

Each round: K clients drawn uniformly without replacement; each starts from the global model,
runs one local epoch of SGD over its shard, and its model delta is averaged into the global one.
"""

import copy

import torch
from common import arguments, local_epoch, timed_rounds


def main() -> None:
    args = arguments(device=True)
    local = []  # the clients' model, made once

    def fedavg_round(model, shards, images, labels, rng) -> None:
        if not local:
            local.append(copy.deepcopy(model))
        total = [torch.zeros_like(p) for p in model.parameters()]
        for shard in shards:
            local[0].load_state_dict(model.state_dict())
            optimizer = torch.optim.SGD(local[0].parameters(), lr=args.lr)
            local_epoch(local[0], optimizer, images, labels, shard, args.batch_size, rng)
            with torch.no_grad():
                for acc, mine in zip(total, local[0].parameters(), strict=True):
                    acc.add_(mine)
        with torch.no_grad():
            for param, acc in zip(model.parameters(), total, strict=True):
                param.copy_(acc / len(shards))

    timed_rounds(args, fedavg_round)


if __name__ == "__main__":
    main()
