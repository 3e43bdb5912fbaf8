"""Flower 1.42's SecAgg+ on the secure-aggregation benchmark's updates, each of K clients every round.

Run with the Python of an environment that has ``flwr[simulation]==1.42.0`` (never the project's);
``scripts/benchmark_secagg.py --flower-python PYTHON`` runs it side by side with ours. Client i
returns update i of ``common.secagg_updates`` with weight 1 (in the sparse form only the public
mask's kept coordinates, as a Flower user would send them under Algorithm 1: the mask is the same
for every client), and FedAvg sums them ``--rounds`` times, through Flower's ``SecAggPlusWorkflow``
(``--secure``: ``--num-shares`` = our neighbours + 1, as Flower counts a client's own share, and
``--threshold``) or its default fit workflow. A round is timed from the strategy's
``configure_fit`` to its ``aggregate_fit``; every message a client receives and sends is
serialised as Flower's wire carries it (its protobuf) and its size added up by kind and direction.
Prints one line, ``ROUNDS {"round_seconds": [...], "bytes": {"KIND/up": n, ...}}`` (bytes summed
over every round).
"""

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from common import RoundClock, secagg_updates
from flower_timing import TimedFedAvg
from flwr.app import Context, Message
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import recorddict_to_proto
from flwr.server import ServerApp, ServerConfig
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.simulation import run_simulation

COUNTS = "LF_FLOWER_SECAGG_COUNTS"  # the file each client process appends its message sizes to


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-round", type=int, required=True)
    parser.add_argument("--numel", type=int, required=True)
    parser.add_argument("--kept", type=float, default=None, help="the sparse form's kept fraction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--secure", action="store_true")
    parser.add_argument("--num-shares", type=int, default=None)
    parser.add_argument("--threshold", type=int, default=None)
    return parser.parse_args()


ARGS = arguments()
_UPDATES = []  # each Ray actor builds the updates once


def update(client: int) -> np.ndarray:
    if not _UPDATES:
        values, support = secagg_updates(ARGS.per_round, ARGS.numel, ARGS.kept, ARGS.seed)
        _UPDATES.extend(v if support is None else v[support] for v in values)
    return _UPDATES[client]


class Client(NumPyClient):
    def __init__(self, client: int) -> None:
        self.client = client

    def fit(self, parameters, config):
        return [update(self.client)], 1, {}


def client_fn(context: Context):
    return Client(int(context.node_config["partition-id"])).to_client()


def kind(message: Message) -> str:
    """The SecAgg+ stage a message belongs to, or ``fit`` for the plain round's."""
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS) if message.has_content() else None
    return str(configs[Key.STAGE]) if configs and Key.STAGE in configs else "fit"


def size(message: Message) -> int:
    return recorddict_to_proto(message.content).ByteSize() if message.has_content() else 0


def counting_mod(message: Message, context: Context, call_next) -> Message:
    """Outermost mod: the sizes of what reaches the client and what it sends back (the message read
    before the inner mods, which take the stage out of it)."""
    stage, received = kind(message), size(message)
    reply = call_next(message, context)
    with open(os.environ[COUNTS], "a") as out:  # one short line a write: appends do not interleave
        out.write(json.dumps({f"{stage}/down": received, f"{stage}/up": size(reply)}) + "\n")
    return reply


def main() -> None:
    clock = RoundClock()
    k = ARGS.per_round
    length = update(0).size
    strategy = TimedFedAvg(
        clock, fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=k, min_evaluate_clients=0,
        min_available_clients=k, initial_parameters=ndarrays_to_parameters([np.zeros(length, np.float32)]),
    )  # fmt: skip
    server = ServerApp()

    @server.main()
    def _(grid, context: Context) -> None:
        config = ServerConfig(num_rounds=ARGS.rounds)
        legacy = LegacyContext(context=context, config=config, strategy=strategy)
        fit = SecAggPlusWorkflow(ARGS.num_shares, ARGS.threshold) if ARGS.secure else None
        DefaultWorkflow(fit_workflow=fit)(grid, legacy)

    mods = [counting_mod, secaggplus_mod] if ARGS.secure else [counting_mod]
    with tempfile.TemporaryDirectory() as folder:
        os.environ[COUNTS] = str(Path(folder) / "counts.jsonl")
        run_simulation(
            server_app=server, client_app=ClientApp(client_fn=client_fn, mods=mods), num_supernodes=k,
            backend_name="ray", backend_config={"client_resources": {"num_cpus": 2, "num_gpus": 0.0}},
        )  # fmt: skip
        total = Counter()
        for line in Path(os.environ[COUNTS]).read_text().splitlines():
            total.update(json.loads(line))
    clock.report(bytes=dict(total))


if __name__ == "__main__":
    main()
