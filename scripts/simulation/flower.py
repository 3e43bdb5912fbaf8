"""Flower 1.42's simulation on the benchmark's clients: ``run_simulation``, Ray backend, ``FedAvg``.

Run with the Python of an environment that has ``flwr[simulation]==1.42.0`` (never the
project's). A round is timed from the strategy's ``configure_fit`` to its ``aggregate_fit``.
"""

import numpy as np
import torch
from common import RoundClock, arguments, load_clients, local_epoch, network, seeded
from flower_timing import TimedFedAvg
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.simulation import run_simulation

ARGS = arguments()
_DATA = {}  # each Ray actor loads the clients once


def clients() -> dict:
    if not _DATA:
        _DATA.update(load_clients(ARGS.data))
    return _DATA


def weights(model) -> list[np.ndarray]:
    return [p.detach().cpu().numpy() for p in model.state_dict().values()]


class Client(NumPyClient):
    def __init__(self, client: int) -> None:
        self.client = client
        self.model = network()

    def fit(self, parameters, config):
        state = dict(
            zip(self.model.state_dict(), (torch.from_numpy(np.copy(p)) for p in parameters), strict=True)
        )
        self.model.load_state_dict(state)
        data = clients()
        optimizer = torch.optim.SGD(self.model.parameters(), lr=ARGS.lr)
        rng = np.random.default_rng([ARGS.seed, self.client, int(config.get("round", 0))])
        shard = data["shards"][self.client]
        local_epoch(self.model, optimizer, data["images"], data["labels"], shard, ARGS.batch_size, rng)
        return weights(self.model), len(shard), {}


def client_fn(context: Context):
    return Client(int(context.node_config["partition-id"])).to_client()


def main() -> None:
    seeded(ARGS.seed)
    num_clients = len(torch.load(ARGS.data, weights_only=True)["shards"])
    clock = RoundClock()

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = TimedFedAvg(
            clock, fraction_fit=ARGS.per_round / num_clients, fraction_evaluate=0.0,
            min_fit_clients=ARGS.per_round, min_evaluate_clients=0, min_available_clients=num_clients,
            initial_parameters=ndarrays_to_parameters(weights(network())),
        )  # fmt: skip
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=ARGS.rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
        num_supernodes=num_clients, backend_name="ray",
        backend_config={"client_resources": {"num_cpus": 2, "num_gpus": 0.0}},
    )  # fmt: skip
    clock.report()


if __name__ == "__main__":
    main()
