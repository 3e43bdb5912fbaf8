"""The baseline: a plain single-process PyTorch loop doing exactly the clients' work of FedAvg.

Each round: K clients drawn uniformly without replacement; each starts from the global model,
runs one local epoch of SGD over its shard, and its model delta is averaged into the global one.
"""

import copy

import torch
from common import RoundClock, arguments, load_clients, local_epoch, network, seeded


def main() -> None:
    args = arguments(device=True)
    data = load_clients(args.data)
    device = torch.device(args.device)
    images, labels = data["images"].to(device), data["labels"].to(device)
    rng = seeded(args.seed)
    model = network().to(device)
    local = copy.deepcopy(model)
    clock = RoundClock()
    for _ in range(args.rounds):
        clock.start()
        clients = rng.choice(len(data["shards"]), args.per_round, replace=False)
        total = [torch.zeros_like(p) for p in model.parameters()]
        for client in clients:
            local.load_state_dict(model.state_dict())
            optimizer = torch.optim.SGD(local.parameters(), lr=args.lr)
            local_epoch(local, optimizer, images, labels, data["shards"][client], args.batch_size, rng)
            with torch.no_grad():
                for acc, mine in zip(total, local.parameters(), strict=True):
                    acc.add_(mine)
        with torch.no_grad():
            for param, acc in zip(model.parameters(), total, strict=True):
                param.copy_(acc / len(clients))
        if device.type == "cuda":
            torch.cuda.synchronize()
        clock.stop()
    clock.report()


if __name__ == "__main__":
    main()
