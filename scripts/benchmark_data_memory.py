"""Peak memory of N device processes each loading Fashion-MNIST through FederatedDataModule.

Usage: python scripts/benchmark_data_memory.py [--devices 16]

Each process imports torch, sets up its datamodule (uint8 images held once), and reads its shard
for one epoch. Prints each process's peak RSS, the sum, and the part due to the data (peak RSS
minus the RSS after imports), and the sum of PSS, which counts shared pages once.
"""

import argparse
import multiprocessing as mp
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_fed.runs.cli import OneLineParser, int_at_least  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pss_mib() -> float:
    """Proportional set size: shared library pages divided among the processes that share them."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def device(rank: int, devices: int, queue) -> None:
    import torch

    from datamodules import FederatedDataModule

    torch.set_num_threads(1)
    after_imports = _rss_mib()
    dm = FederatedDataModule("fashion-mnist", num_devices=devices)
    dm.setup(None)
    for _ in dm.device_dataloader(rank):
        pass
    queue.put((rank, after_imports, _rss_mib(), _pss_mib()))


def main(argv=None) -> None:
    parser = OneLineParser(
        prog="benchmark_data_memory.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--devices", type=int_at_least(1), default=16)
    args = parser.parse_args(argv)
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=device, args=(r, args.devices, queue)) for r in range(args.devices)]
    for p in processes:
        p.start()
    results = sorted(queue.get() for _ in processes)
    for p in processes:
        p.join()
    total = sum(r[2] for r in results)
    data = sum(peak - base for _, base, peak, _ in results)
    pss = sum(r[3] for r in results)
    print(f"{args.devices} processes loading Fashion-MNIST (60 000 + 10 000 images, uint8)")
    print(f"peak RSS per process: {min(r[2] for r in results):.0f}-{max(r[2] for r in results):.0f} MiB")
    print(f"sum of peak RSS: {total / 1024:.2f} GiB (shared libraries counted {args.devices} times)")
    print(
        f"sum of PSS after one epoch: {pss / 1024:.2f} GiB; data loading added {data / 1024:.2f} GiB in all"
    )


if __name__ == "__main__":
    main()
