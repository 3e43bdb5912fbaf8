"""Forward+backward time and peak memory of a variational network against the plain one.

Usage: python scripts/benchmark_layers.py [--network cifarnet] [--batch-size 128] [--steps 20] [--threads 2]
                                          [--recurrent-noise batch]

``--network char_lstm_small`` (or ``char_lstm``) times the Shakespeare model on windows of 80
characters: its variational form draws each LSTM matrix once a mini-batch (``--recurrent-noise
sequence``: once a sequence, one kernel call a sequence), where CifarNet's uses the local
reparameterization trick, so the ratios measure different costs.

Each variant runs in its own process (so peak RSS is its own); the two are interleaved over
several rounds and the median step time is used. Prints the ratios variational / plain.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_fed.runs.cli import OneLineParser, int_at_least  # noqa: E402


def measure(kind: str, network: str, batch_size: int, steps: int, threads: int, noise: str = "batch") -> dict:
    """Time ``steps`` forward+backward passes of one variant; report median time and peak RSS."""
    import torch
    import torch.nn.functional as F

    from lightning_fed.nn import variational
    from modules.catalog import TEXT_NETWORKS
    from modules.networks import build_network

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    text = network in TEXT_NETWORKS
    classes = 81 if text else 10
    options = {"recurrent_noise": noise} if text else {}
    net = build_network(network, 1, 80 if text else 28, classes, **options)
    if kind == "variational":
        net = variational(net)
    x = torch.randint(0, classes, (batch_size, 80)) if text else torch.randn(batch_size, 1, 28, 28)
    y = torch.randint(0, classes, (batch_size,))
    for _ in range(3):  # warm-up
        F.cross_entropy(net(x), y).backward()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        times.append(time.perf_counter() - start)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(times), "peak_rss_mib": rss_after / 1024}


def run_child(kind: str, args) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--network", args.network]
    command += ["--batch-size", str(args.batch_size)]
    command += ["--steps", str(args.steps), "--threads", str(args.threads)]
    command += ["--recurrent-noise", args.recurrent_noise]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main(argv=None) -> None:
    parser = OneLineParser(
        prog="benchmark_layers.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--network", default="cifarnet", choices=["cifarnet", "char_lstm_small", "char_lstm"])
    parser.add_argument("--batch-size", type=int_at_least(1), default=128)
    parser.add_argument("--steps", type=int_at_least(1), default=20)
    parser.add_argument("--threads", type=int_at_least(1), default=2)
    parser.add_argument("--rounds", type=int_at_least(1), default=3)
    parser.add_argument(
        "--recurrent-noise", default="batch", choices=["batch", "sequence"],
        help="char_lstm*: one draw of the LSTM's matrices a mini-batch, or one a sequence",
    )  # fmt: skip
    parser.add_argument("--child", choices=["plain", "variational"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.recurrent_noise != "batch" and not args.network.startswith("char_lstm"):
        parser.error(f"--recurrent-noise {args.recurrent_noise} applies to char_lstm and char_lstm_small")
    if args.child:
        figures = measure(
            args.child, args.network, args.batch_size, args.steps, args.threads, args.recurrent_noise
        )
        print(json.dumps(figures))
        return
    results = {"plain": [], "variational": []}
    for _ in range(args.rounds):
        for kind in results:
            results[kind].append(run_child(kind, args))
    plain_t = statistics.median(r["seconds"] for r in results["plain"])
    var_t = statistics.median(r["seconds"] for r in results["variational"])
    plain_m = statistics.median(r["peak_rss_mib"] for r in results["plain"])
    var_m = statistics.median(r["peak_rss_mib"] for r in results["variational"])
    what = "28x28 images" if args.network == "cifarnet" else "windows of 80 characters"
    noise = f", {args.recurrent_noise} noise" if args.network != "cifarnet" else ""
    print(f"{args.network}, {what}{noise}, batch {args.batch_size}, {args.threads} threads, forward+backward")
    print(f"{'':12}{'plain':>12}{'variational':>14}{'ratio':>8}")
    print(f"{'time (ms)':12}{plain_t * 1e3:12.1f}{var_t * 1e3:14.1f}{var_t / plain_t:8.2f}")
    print(f"{'peak (MiB)':12}{plain_m:12.0f}{var_m:14.0f}{var_m / plain_m:8.2f}")


if __name__ == "__main__":
    main()
