"""The cost of secure aggregation per round: seconds and bytes against the plain sum, side by side.

Usage: python scripts/benchmark_secagg.py [--per-round 10,50] [--numel 1384586] [--kept 0.03]
           [--repeats 3] [--out FILE.json]

For each K (devices a round) and each form, K updates of random values (uniform in +-0.01, the
size of a FedAvg delta) are summed twice in this process: **plain**, as the server sums them
without it (each update encoded by the lossless codec, decoded and added), and **secure**, by
SecAgg+ (fixed point, keys, encrypted shares, masked words, unmasking; ``lightning_fed.secure``)
with its default K-neighbour graph. The forms: ``dense`` (``--numel`` values, CifarNet's shared
parameters by default) and ``sparse`` (Algorithm 1: the ``--kept`` fraction of them, the public
mask's kept coordinates, which every device sends and the plain codec writes with positions).
Printed per K and form: the median seconds of ``--repeats`` sums each way and their ratio, the
bytes of the round each way (uploads and downloads; for SecAgg+ every kind of message) and their
ratio. The devices' training is left out: it is the same either way.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_fed.runs.cli import OneLineParser, int_at_least, whole_numbers  # noqa: E402


def updates(count: int, numel: int, kept: float | None, seed: int):
    """``count`` flat float32 updates; with ``kept``, zero outside one shared random support."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    support = None if kept is None else rng.random(numel) < kept
    out = []
    for _ in range(count):
        values = rng.uniform(-0.01, 0.01, numel).astype(np.float32)
        if support is not None:
            values[~support] = 0.0
        out.append(torch.from_numpy(values))
    return out, (None if support is None else torch.from_numpy(support))


def plain_round(tensors) -> tuple[float, int]:
    """Seconds and upload bytes of the plain sum: each update encoded, decoded and added."""
    from lightning_fed.communication import SparseCodec

    codec, start, sent = SparseCodec(), time.perf_counter(), 0
    total = None
    for tensor in tensors:
        payload = codec.encode([tensor])
        sent += len(payload)
        decoded = codec.decode(payload, [tensor.numel()])[0]
        total = decoded if total is None else total + decoded
    return time.perf_counter() - start, sent


def secure_round(tensors, keep, seed: int) -> tuple[float, dict]:
    """Seconds and bytes by kind of the SecAgg+ sum of ``tensors`` (the kept coordinates only)."""
    from lightning_fed.secure.fixed_point import FixedPoint
    from lightning_fed.secure.options import resolved_secagg
    from lightning_fed.secure.secagg import SecAggPlus

    per_round = len(tensors)
    defaults = argparse.Namespace(secagg_neighbours=None, secagg_threshold=None)
    k, t = resolved_secagg(defaults, per_round)
    start = time.perf_counter()
    point = FixedPoint(1.0, per_round)
    keeps = None if keep is None else [keep]
    words = {d: point.encode([tensor], keeps, seed=(seed, d)) for d, tensor in enumerate(tensors)}
    outcome = SecAggPlus(k, t, seed=seed).run(list(range(per_round)), words, step=0)
    point.decode(outcome.total, keeps, [tensors[0].numel()])
    return time.perf_counter() - start, outcome.bytes


def measure(per_round: int, form: str, args) -> dict:
    tensors, keep = updates(per_round, args.numel, args.kept if form == "sparse" else None, seed=per_round)
    plain, secure = [], []
    for repeat in range(args.repeats):  # in turn, so both see the same machine
        seconds, plain_bytes = plain_round(tensors)
        plain.append(seconds)
        seconds, by_kind = secure_round(tensors, keep, seed=repeat)
        secure.append(seconds)
    secure_up = sum(v for k, v in by_kind.items() if k.endswith("/up"))
    return {
        "per_round": per_round, "form": form,
        "plain_seconds": statistics.median(plain), "secure_seconds": statistics.median(secure),
        "plain_upload_bytes": plain_bytes, "secure_upload_bytes": secure_up,  # downloads: the same
        "secure_extra_download_bytes": sum(v for k, v in by_kind.items() if k.endswith("/down")),
        "secure_bytes": by_kind,
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = [
        "| K | form | plain sum, s | SecAgg+, s | ratio | plain uploads | SecAgg+ uploads | ratio "
        "| SecAgg+'s downloads besides |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['per_round']} | {r['form']} | {r['plain_seconds']:.2f} | {r['secure_seconds']:.2f} | "
            f"{r['secure_seconds'] / r['plain_seconds']:.1f}x | {r['plain_upload_bytes'] / 2**20:.1f} MiB | "
            f"{r['secure_upload_bytes'] / 2**20:.1f} MiB | "
            f"{r['secure_upload_bytes'] / r['plain_upload_bytes']:.2f}x | "
            f"{r['secure_extra_download_bytes'] / 2**10:.0f} KiB |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = OneLineParser(
        prog="benchmark_secagg.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--per-round", type=whole_numbers, default=[10, 50], help="K, the devices of a round, comma-separated"
    )
    parser.add_argument("--numel", type=int_at_least(1), default=1_384_586, help="values of an update")
    parser.add_argument("--kept", type=float, default=0.03, help="the sparse form's kept fraction")
    parser.add_argument("--repeats", type=int_at_least(1), default=3)
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    sizes = args.per_round
    if min(sizes) < 3:
        parser.error(f"--per-round {','.join(map(str, sizes))}: a secure round needs at least 3 devices")
    if not 0 < args.kept <= 1:
        parser.error(f"--kept {args.kept}: give a fraction in (0, 1]")
    rows = []
    for per_round in sizes:
        for form in ("dense", "sparse"):
            rows.append(measure(per_round, form, args))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "secure_bytes"}), flush=True)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
