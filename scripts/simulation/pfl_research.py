"""Apple's pfl-research on the benchmark's clients: ``SimulatedBackend`` and ``FederatedAveraging``.

Run with the Python of an environment that has ``pfl[pytorch]`` (never the project's). A round
is timed between two ``after_central_iteration`` callbacks (the first from training's start).
"""

import torch
from common import RoundClock, arguments, load_clients, network, seeded
from pfl.aggregate.simulate import SimulatedBackend
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.callback.base import TrainingProcessCallback
from pfl.data.federated_dataset import FederatedDataset
from pfl.data.pytorch import PyTorchTensorDataset
from pfl.data.sampling import get_user_sampler
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.metrics import Metrics
from pfl.model.pytorch import PyTorchModel


class Net(torch.nn.Module):
    """CifarNet with the ``loss`` and ``metrics`` that ``PyTorchModel`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.net = network()

    def forward(self, x):
        return self.net(x)

    def loss(self, x, y, eval=False):  # noqa: A002 (pfl's signature)
        return torch.nn.functional.cross_entropy(self(x), y)

    @torch.no_grad()
    def metrics(self, x, y, eval=False):  # noqa: A002
        from pfl.metrics import Weighted

        return {"loss": Weighted(float(self.loss(x, y)) * len(y), len(y))}


class Clock(TrainingProcessCallback):
    def __init__(self, clock: RoundClock) -> None:
        self.clock = clock

    def on_train_begin(self, *, model):
        self.clock.start()
        return Metrics()

    def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
        self.clock.stop()
        self.clock.start()
        return False, Metrics()


def main() -> None:
    args = arguments()
    seeded(args.seed)
    data = load_clients(args.data)
    users = list(range(len(data["shards"])))

    def make_dataset(user):
        index = torch.from_numpy(data["shards"][user])
        return PyTorchTensorDataset((data["images"][index], data["labels"][index]), user_id=str(user))

    federated = FederatedDataset(make_dataset, get_user_sampler("random", users))
    net = Net()
    model = PyTorchModel(
        net,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
    )
    backend = SimulatedBackend(training_data=federated, val_data=federated)
    clock = RoundClock()
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=args.rounds, evaluation_frequency=10**9, train_cohort_size=args.per_round,
            val_cohort_size=0,
        ),
        backend=backend, model=model,
        model_train_params=NNTrainHyperParams(
            local_num_epochs=1, local_learning_rate=args.lr, local_batch_size=args.batch_size
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=256),
        callbacks=[Clock(clock)],
    )  # fmt: skip
    clock._start = None
    clock.report()


if __name__ == "__main__":
    main()
