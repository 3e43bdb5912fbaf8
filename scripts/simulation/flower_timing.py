"""Flower's FedAvg with each round timed, for the Flower engines (``flower.py``, ``flower_secagg.py``).

Imports flwr: run with the Python of Flower's own environment. A round is timed from the
strategy's ``configure_fit`` to its ``aggregate_fit`` (under ``SecAggPlusWorkflow`` that spans its
four stages); a round with a failed client stops the run.
"""

from common import RoundClock
from flwr.server.strategy import FedAvg


class TimedFedAvg(FedAvg):
    def __init__(self, clock: RoundClock, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock

    def configure_fit(self, server_round, parameters, client_manager):
        self.clock.start()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} clients failed: {failures[0]}")
        out = super().aggregate_fit(server_round, results, failures)
        self.clock.stop()
        return out
