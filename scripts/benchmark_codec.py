"""Milliseconds to encode and decode one client's message, with the allocator as it comes and tuned.

Usage: python scripts/benchmark_codec.py [--codecs float32,qsgd:8] [--iterations 50] [--repeats 5]

The message is what ``scripts/benchmark_simulation.py``'s clients send at 1,000 / 50: the model
delta of CifarNet (plain layers, 1.38 M floats) after one local epoch of SGD (lr 0.05, batch 32)
on client 0's 55 Fashion-MNIST images, iid over 1,000 clients (seed 0); its ReLUs leave about a
fifth of the big layers' entries exactly zero, so those travel as bitmap + values. Each codec is
timed in two fresh processes side by side: ``default`` (glibc as it comes) and ``kept`` (glibc told
to keep freed memory: ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised), so the
ratio shows what the kernel's fresh pages for every new payload cost. Printed: the median over
repeats of each repeat's mean milliseconds per call, for encode, decode, and decode + the server's
weighted add (``RunningSum.add``).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts" / "simulation")]
from lightning_fed.communication import make_codec  # noqa: E402
from lightning_fed.runs.cli import OneLineParser, int_at_least  # noqa: E402

KEPT = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}


def client_delta() -> list:
    """The flat model delta of client 0 after one local epoch (``simulation/common.local_epoch``)."""
    import torch
    from common import local_epoch, network, seeded

    from datamodules import FederatedDataModule

    dm = FederatedDataModule("fashion-mnist", 1000, batch_size=32, seed=0)
    dm.setup("fit")
    mean, std = dm.info.mean[0], dm.info.std[0]
    images = (dm.train_data.images.float() / 255.0 - mean) / std
    torch.manual_seed(0)
    model = network()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    local_epoch(model, optimizer, images, dm.train_data.labels, dm.partition.shards[0], 32, seeded(0))
    return [(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before, strict=True)]


def per_call_ms(function, iterations: int, repeats: int) -> float:
    """The median over ``repeats`` of the mean milliseconds of ``iterations`` calls (one warm-up).

    Example::

        >>> calls = []
        >>> per_call_ms(lambda: calls.append(1), iterations=4, repeats=3) >= 0, len(calls)
        (True, 13)
    """
    function()
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            function()
        means.append(1e3 * (time.perf_counter() - start) / iterations)
    return statistics.median(means)


def measure(spec: str, iterations: int, repeats: int) -> dict:
    """Encode, decode and decode + weighted add of the client's delta under codec ``spec``."""
    from lightning_fed.federation.aggregation import RunningSum

    tensors = client_delta()
    numels = [t.numel() for t in tensors]
    codec = make_codec(spec)
    payload = codec.encode(tensors, step=0, seed=(0, 0))
    total = RunningSum()
    total.add(tensors, 1.0)

    def decode_add():
        total.add(codec.decode(payload, numels), 0.02)

    return {
        "bytes": len(payload),
        "encode_ms": per_call_ms(lambda: codec.encode(tensors, step=0, seed=(0, 0)), iterations, repeats),
        "decode_ms": per_call_ms(lambda: codec.decode(payload, numels), iterations, repeats),
        "decode_add_ms": per_call_ms(decode_add, iterations, repeats),
    }


def main(argv=None) -> None:
    parser = OneLineParser(
        prog="benchmark_codec.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codecs", default="float32,qsgd:8", help="codec specs, comma-separated")
    parser.add_argument("--iterations", type=int_at_least(1), default=50, help="calls per repeat")
    parser.add_argument("--repeats", type=int_at_least(1), default=5)
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # one codec, in this process
    args = parser.parse_args(argv)
    for spec in args.codecs.split(","):
        if not spec:
            parser.error(f"--codecs {args.codecs!r}: an empty spec; give e.g. float32,qsgd:8")
        try:
            make_codec(spec, option="--codecs")
        except ValueError as error:
            parser.error(str(error))
    if args.run is not None:
        print("RESULT " + json.dumps(measure(args.run, args.iterations, args.repeats)), flush=True)
        return
    print(f"{'codec':<10} {'allocator':<9} {'bytes':>9} {'encode ms':>10} {'decode ms':>10} {'+ add ms':>9}")
    for spec in args.codecs.split(","):
        rows = {}
        for allocator, extra in (("default", {}), ("kept", KEPT)):
            command = [sys.executable, __file__, "--run", spec, "--iterations", str(args.iterations)]
            command += ["--repeats", str(args.repeats)]
            env = {**{k: v for k, v in os.environ.items() if k not in KEPT}, **extra}
            out = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
            ).stdout
            row = rows[allocator] = json.loads(out.split("RESULT ", 1)[1])
            print(
                f"{spec:<10} {allocator:<9} {row['bytes']:>9} {row['encode_ms']:>10.2f} "
                f"{row['decode_ms']:>10.2f} {row['decode_add_ms']:>9.2f}",
                flush=True,
            )
        ratios = [rows["default"][k] / rows["kept"][k] for k in ("encode_ms", "decode_ms", "decode_add_ms")]
        print(f"{spec:<10} {'ratio':<9} {'':>9} " + " ".join(f"{r:>9.2f}x" for r in ratios), flush=True)


if __name__ == "__main__":
    main()
