"""Where a round's seconds go: ``ours.py`` or ``plain.py`` with timers around their stages.

Usage: python scripts/simulation/stages.py {ours,plain} CLIENTS [--rounds 4] [--per-round 50]

CLIENTS is the ``clients.pt`` that ``write_clients`` of ``scripts/benchmark_simulation.py`` writes.
Prints the engine's ``ROUNDS`` line, then ``STAGES {...}``: seconds a round in each stage, the
first round (a warm-up) left out. ``ours``: ``train`` (every local step's forward and backward, in
Lightning), ``local_update`` (``train`` plus the client optimizer's steps and the masked delta),
``encode``, ``decode_add`` (the server reading a payload into its sum), ``watch`` (the finiteness
check) and ``round``. ``plain``: ``train`` (the network's forward and the backward) and
``local_epoch`` (plus the loss and the optimizer's steps). Timers are ``time.perf_counter``
around whole calls: no profiler overhead on the calls inside them.
"""

import collections
import functools
import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECONDS: dict[str, float] = collections.defaultdict(float)


def timed(owner, name: str, stage: str, warm_up_calls: int = 0) -> None:
    """Replace ``owner.name`` by a wrapper that adds its calls' seconds to ``SECONDS[stage]``;
    when its ``warm_up_calls``-th call ends (the first round's last), every stage starts from zero."""
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SECONDS[stage] += time.perf_counter() - start
            calls[0] += 1
            if calls[0] == warm_up_calls:
                SECONDS.clear()

    setattr(owner, name, wrapper)


def time_ours() -> None:
    sys.path.insert(0, str(HERE.parents[1]))
    from lightning_fed.federation import host
    from lightning_fed.federation.compression import Compression
    from lightning_fed.federation.fedavg import FedAvg
    from lightning_fed.federation.transport import InProcess
    from lightning_fed.strategy import FederatedStrategy

    timed(FederatedStrategy, "local_step", "train")
    timed(FedAvg, "client_update", "local_update")
    timed(Compression, "encode_upload", "encode")
    timed(host, "non_finite", "watch")
    timed(FederatedStrategy, "training_step", "round", warm_up_calls=1)
    timed(InProcess, "upload", "decode_add")


def time_plain(per_round: int) -> None:
    import common
    import torch

    timed(torch.nn.Sequential, "forward", "train")  # the network (CifarNet is one Sequential)
    timed(torch.Tensor, "backward", "train")
    timed(common, "local_epoch", "local_epoch", warm_up_calls=per_round)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("ours", "plain"):
        raise SystemExit("usage: stages.py {ours,plain} CLIENTS [--rounds R] [--per-round K]")
    engine = sys.argv[1]
    sys.path.insert(0, str(HERE))
    from common import arguments

    sys.argv = [str(HERE / f"{engine}.py"), *sys.argv[2:]]
    args = arguments()  # the engines' own options and defaults
    if args.rounds < 2:
        raise SystemExit("stages.py: --rounds must be at least 2 (the first is a warm-up, left out)")
    time_ours() if engine == "ours" else time_plain(args.per_round)
    runpy.run_path(sys.argv[0], run_name="__main__")
    per_round = {stage: round(s / (args.rounds - 1), 3) for stage, s in SECONDS.items()}
    print(f"STAGES {per_round}", flush=True)


if __name__ == "__main__":
    main()
