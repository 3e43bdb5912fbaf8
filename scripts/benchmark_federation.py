"""``fit.py --devices N`` with devices hosted by P processes, against N processes and a plain loop.

Usage: python scripts/benchmark_federation.py [--devices 16] [--steps 12] [--layouts 1,16,plain]

Each layout runs in a fresh process tree, one after the other, on the paper's setting (variational
CifarNet, Fashion-MNIST, batch 128 per device, Adam, the paper's variant with local log_sigma2):

- ``P`` (a number): ``fit.py``'s own trainer, model and datamodule (``fit_run.build_*``) with
  ``--processes P``, training only (no validation, no test);
- ``plain``: one process, no Lightning: each step every device's forward and backward of its own
  batch with its own log_sigma2 (and its own Adam for it), gradients masked, averaged, Adam on theta.

Printed per layout: seconds from launch to the end of the first step, steady samples per second
(steps 3 to K), and the peak memory of the whole process tree (sum of PSS, sampled every 0.5 s);
then each layout's samples per second as a ratio to ``plain``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
WARM_STEPS = 2  # steps left out of the steady rate

from process_tree import tree_pss_bytes  # noqa: E402

from lightning_fed.runs.cli import OneLineParser, int_at_least  # noqa: E402


def bad_layouts(layouts: str, devices: int) -> list[str]:
    """The entries of ``--layouts`` that are neither ``plain`` nor a process count that divides ``devices``.

    Example::

        >>> bad_layouts("1,16,plain", 16), bad_layouts("3,x,,32", 16)
        ([], ['3', 'x', '', '32'])
    """

    def allowed(layout: str) -> bool:
        if layout == "plain":
            return True
        return layout.isdigit() and 1 <= int(layout) <= devices and devices % int(layout) == 0

    return [layout for layout in layouts.split(",") if not allowed(layout)]


def measure(layout: str, devices: int, steps: int, out: Path) -> dict:
    """Runs one layout in its own process tree; its step times, with the tree's peak PSS."""
    result = out / f"{layout}.json"
    command = [sys.executable, __file__, "--run", layout, "--devices", str(devices), "--steps", str(steps)]
    command += ["--result", str(result)]
    launched = time.time()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_pss_bytes(child.pid))
        time.sleep(0.5)
    if child.returncode != 0:
        raise SystemExit(f"benchmark_federation: layout {layout} failed:\n{child.stderr.read()[-3000:]}")
    times = json.loads(result.read_text())["step_ends"]
    steady = (len(times) - 1 - WARM_STEPS) * devices * 128 / (times[-1] - times[WARM_STEPS])
    return {"first_step_s": times[0] - launched, "samples_per_s": steady, "peak_pss_gib": peak / 2**30}


def run_fit_layout(processes: int, devices: int, steps: int, result: Path) -> None:
    """One ``fit.py`` run as its functions build it, timing every step on process 0."""
    import fit
    import fit_run
    import pytorch_lightning as pl

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.ends.append(time.time())

    folder = Path(tempfile.mkdtemp(prefix="lf-bench-"))
    args = fit.parse_args(
        ["--devices", str(devices), "--processes", str(processes), "--max-epochs", "1", "--val-size", "0"]
        + ["--limit-train-batches", str(steps), "--wandb-mode", "disabled", "--output-dir", str(folder)]
    )
    args.accelerator = "cpu"
    pl.seed_everything(0, verbose=False)
    dm = fit_run.build_datamodule(args)
    model = fit_run.build_model(args, dm)
    clock = StepClock()
    trainer = fit_run.build_trainer(args, folder, [clock])
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        result.write_text(json.dumps({"step_ends": clock.ends}))


def run_plain_loop(devices: int, steps: int, result: Path) -> None:
    """The same steps without Lightning or the federation's machinery."""
    import torch

    from datamodules import FederatedDataModule
    from modules.classifier import SparseVDClassifier

    torch.manual_seed(0)
    dm = FederatedDataModule("fashion-mnist", devices, val_size=0)
    dm.setup("fit")
    model = SparseVDClassifier("cifarnet", dm.num_train)
    theta = [p for n, p in model.named_parameters() if not n.endswith("log_sigma2")]
    local = [p for n, p in model.named_parameters() if n.endswith("log_sigma2")]
    own = [[p.detach().clone() for p in local] for _ in range(devices)]  # each device's log_sigma2
    server = torch.optim.Adam(theta, lr=1e-3)
    device_optimizers = [torch.optim.Adam(tensors, lr=1e-3) for tensors in own]
    loaders = [iter(dm.device_dataloader(d)) for d in range(devices)]
    ends = []
    for _ in range(steps):
        total = [torch.zeros_like(p) for p in theta]
        for device in range(devices):
            for param, value in zip(local, own[device], strict=True):
                param.data = value  # the device's log_sigma2, no copy
            x, y = next(loaders[device])
            model.masker.refresh()
            model.zero_grad(set_to_none=True)
            model.elbo_terms(model(x), y)["loss"].backward()
            for acc, param in zip(total, theta, strict=True):
                acc.add_(param.grad)
            for param, value in zip(local, own[device], strict=True):
                value.grad = param.grad
            device_optimizers[device].step()
        for param, acc in zip(theta, total, strict=True):
            param.grad = acc / devices
        server.step()
        ends.append(time.time())
    result.write_text(json.dumps({"step_ends": ends}))


def main(argv=None) -> None:
    parser = OneLineParser(
        prog="benchmark_federation.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=int_at_least(1), default=16)
    parser.add_argument("--steps", type=int_at_least(WARM_STEPS + 2), default=12)
    parser.add_argument("--layouts", default="1,16,plain", help="comma-separated: process counts and 'plain'")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is None and (bad := bad_layouts(args.layouts, args.devices)):
        parser.error(
            f"--layouts {args.layouts}: {', '.join(map(repr, bad))} not allowed; give 'plain' or process "
            f"counts P with 1 <= P <= --devices ({args.devices}) that divide it"
        )
    if args.run == "plain":
        return run_plain_loop(args.devices, args.steps, args.result)
    if args.run is not None:
        return run_fit_layout(int(args.run), args.devices, args.steps, args.result)
    out = Path(tempfile.mkdtemp(prefix="lf-bench-results-"))
    rows = {layout: measure(layout, args.devices, args.steps, out) for layout in args.layouts.split(",")}
    plain = rows.get("plain", {}).get("samples_per_s")
    print(
        f"{args.devices} devices, {args.steps} steps of {args.devices} x 128 samples, {os.cpu_count()} cores"
    )
    print(f"{'layout':<14}{'first step':>12}{'samples/s':>12}{'x plain':>10}{'peak PSS':>12}")
    for layout, row in rows.items():
        name = "plain loop" if layout == "plain" else f"P = {layout}"
        ratio = f"{row['samples_per_s'] / plain:.2f}" if plain else "-"
        print(
            f"{name:<14}{row['first_step_s']:>10.1f} s{row['samples_per_s']:>12.1f}{ratio:>10}"
            f"{row['peak_pss_gib']:>8.2f} GiB"
        )


if __name__ == "__main__":
    main()
